//! Stage `ssv2.tokens` end to end through the release binary, on real VP9 webm files written
//! by libvpx (our demo writer): frames equal what the `ffmpeg` CLI writes for the same
//! indices, size and flags (byte for byte); bad clips are named rejects; config mistakes
//! exit 2 with file:line; bytes do not depend on the thread count; `demo-data` writes the
//! SSv2 layout and schema.

mod common;
use common::*;
use lm4ve_pipeline::shard::ShardReader;
use lm4ve_stages::ssv2::decode::{crop_origin, scaled_size};
use lm4ve_stages::ssv2::demo::{
    synth_clip, write_demo_ssv2, write_webm, DemoSsv2Config, Motion, LABELS_DIR, TRAIN_JSON,
    VALIDATION_JSON, VIDEO_DIR,
};
use lm4ve_stages::ssv2::sampling::clip_indices;
use lm4ve_stages::ssv2::tubelets::unpack;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A small SSv2-format dataset from the demo writer: `train` / `validation` clips per class.
fn demo_root(dir: &Path, train: usize, validation: usize) -> PathBuf {
    let root = dir.join("ssv2");
    let cfg = DemoSsv2Config {
        seed: 7,
        train_per_class: train,
        validation_per_class: validation,
        min_frames: 20,
        max_frames: 30,
        ..DemoSsv2Config::default()
    };
    write_demo_ssv2(&root, &cfg).unwrap();
    root
}

fn ssv2_config(dir: &Path, root: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"[cache]
dir = "cache"

[stages.ssv2_tokens]
kind = "ssv2.tokens"
max_reject_fraction = 0.9

[stages.ssv2_tokens.params]
root = "{}"
shard_samples = 4
{extra}
"#,
        root.display()
    );
    let p = dir.join("video.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn split_file(root: &Path, split: &str) -> PathBuf {
    root.join(LABELS_DIR).join(if split == "train" {
        TRAIN_JSON
    } else {
        VALIDATION_JSON
    })
}

/// Appends annotations `(id, template)` to a split file.
fn add_annotations(root: &Path, split: &str, entries: &[(&str, &str)]) {
    let path = split_file(root, split);
    let mut list: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (id, template) in entries {
        list.push(serde_json::json!({
            "id": id, "label": template.replace("[something]", "a thing"),
            "template": template, "placeholders": ["a thing"],
        }));
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&list).unwrap()).unwrap();
}

/// Keeps only the first `n` annotations of a split file.
fn keep_first(root: &Path, split: &str, n: usize) {
    let path = split_file(root, split);
    let mut list: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    list.truncate(n);
    std::fs::write(&path, serde_json::to_vec_pretty(&list).unwrap()).unwrap();
}

fn clip_path(root: &Path, id: &str) -> PathBuf {
    root.join(VIDEO_DIR).join(format!("{id}.webm"))
}

/// Writes a clip of `motion` at any size, constant 12 fps or with the given pts (ms).
fn write_clip(root: &Path, id: &str, w: u32, h: u32, frames: usize, pts_ms: Option<&[i64]>) {
    let seed = id.parse::<u64>().unwrap_or(0) + frames as u64;
    let rgb = synth_clip(Motion::SpinClockwise, w, h, frames, seed);
    write_webm(&clip_path(root, id), w, h, 12, &rgb, pts_ms).unwrap();
}

/// Every sample of the artifact: (split, fields).
fn read_samples(manifest: &Path) -> Vec<(String, Vec<Vec<u8>>)> {
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let base = manifest.parent().unwrap();
    let mut out = Vec::new();
    for s in m["shards"].as_array().unwrap() {
        let mut r = ShardReader::open(&base.join(s["path"].as_str().unwrap())).unwrap();
        for i in 0..r.len() {
            out.push((
                s["split"].as_str().unwrap().to_string(),
                r.read(i).unwrap().fields,
            ));
        }
    }
    out
}

fn i64_of(b: &[u8]) -> i64 {
    i64::from_le_bytes(b.try_into().unwrap())
}

fn probe(path: &Path, entries: &str, count: bool) -> serde_json::Value {
    let mut c = Command::new("ffprobe");
    c.args(["-v", "error", "-select_streams", "v:0"]);
    if count {
        c.arg("-count_frames");
    }
    let o = c
        .args(["-show_entries", entries, "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe (scripts/install-deps.sh installs ffmpeg)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["streams"][0].clone()
}

/// What the ffmpeg CLI writes for frames `indices` of `path` at our size and flags: the
/// select filter, then scale (bilinear) to the short-side size, then the center crop,
/// as rgb24 rawvideo. Repeated indices are selected once and repeated here.
fn ffmpeg_frames(path: &Path, indices: &[usize], short: u32, crop: u32) -> Vec<Vec<u8>> {
    let s = probe(path, "stream=width,height", false);
    let (w, h) = (
        s["width"].as_u64().unwrap() as u32,
        s["height"].as_u64().unwrap() as u32,
    );
    let (sw, sh) = scaled_size(w, h, short);
    let (x0, y0) = crop_origin(sw, sh, crop);
    let mut unique = indices.to_vec();
    unique.sort();
    unique.dedup();
    let select: Vec<String> = unique.iter().map(|i| format!("eq(n\\,{i})")).collect();
    let vf = format!(
        "select='{}',scale={sw}:{sh}:flags=bilinear,crop={crop}:{crop}:{x0}:{y0}",
        select.join("+")
    );
    let o = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-vf", &vf, "-vsync", "0", "-pix_fmt", "rgb24", "-f", "rawvideo", "-",
        ])
        .output()
        .expect("ffmpeg CLI");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let size = (crop * crop * 3) as usize;
    assert_eq!(
        o.stdout.len(),
        unique.len() * size,
        "{}: frames from the CLI",
        path.display()
    );
    indices
        .iter()
        .map(|i| {
            let k = unique.binary_search(i).unwrap();
            o.stdout[k * size..(k + 1) * size].to_vec()
        })
        .collect()
}

/// The distinct gaps between consecutive packet timestamps, in ms.
fn packet_gaps_ms(path: &Path) -> Vec<i64> {
    let o = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    let pts: Vec<i64> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let mut gaps: Vec<i64> = pts.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    gaps.dedup();
    gaps
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

fn manifest_of(config: &Path) -> PathBuf {
    let v = show_stage_json(config, "ssv2_tokens");
    PathBuf::from(v["manifest"].as_str().unwrap())
}

fn irregular_pts(n: usize) -> Vec<i64> {
    // Gaps of 40..200 ms, no two alike in a row: genuinely variable frame rate.
    let mut t = 0;
    (0..n)
        .map(|i| {
            let now = t;
            t += [40, 120, 83, 200, 55, 160][i % 6];
            now
        })
        .collect()
}

#[test]
fn tubelet_frames_equal_the_ffmpeg_cli_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let root = demo_root(dir.path(), 1, 0);
    keep_first(&root, "train", 4);
    // Odd size, portrait, variable frame rate, and a clip shorter than num_frames.
    write_clip(&root, "900001", 241, 177, 20, None);
    write_clip(&root, "900002", 180, 320, 18, None);
    write_clip(&root, "900003", 320, 240, 24, Some(&irregular_pts(24)));
    write_clip(&root, "900004", 320, 240, 5, None);
    add_annotations(
        &root,
        "train",
        &[
            ("900001", "Spinning [something] clockwise"),
            ("900002", "Spinning [something] clockwise"),
            ("900003", "Spinning [something] clockwise"),
            ("900004", "Spinning [something] clockwise"),
        ],
    );
    assert_eq!(
        packet_gaps_ms(&clip_path(&root, "900003")),
        vec![40, 55, 83, 120, 160, 200],
        "clip 900003 has variable frame intervals"
    );
    let cfg = ssv2_config(dir.path(), &root, "views = 2\nrandom_views = 1\nseed = 3");
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    r.ok();
    assert!(r.stdout.contains("8 samples, 0 rejects"), "{}", r.stdout);
    let samples = read_samples(&manifest_of(&cfg));
    assert_eq!(samples.len(), 8);
    let (t, tt, p, short, crop) = (16usize, 2usize, 16usize, 224u32, 224u32);
    let mut compared = 0;
    for (split, fields) in &samples {
        assert_eq!(split, "train");
        assert_eq!(fields[0].len(), 3 * 8 * 14 * 14 * (2 * 16 * 16 * 3));
        let id = i64_of(&fields[2]);
        let path = clip_path(&root, &id.to_string());
        let n = probe(&path, "stream=nb_read_frames", true)["nb_read_frames"]
            .as_str()
            .unwrap()
            .parse::<usize>()
            .unwrap();
        let views = clip_indices(n, t, 2, 1, 3, id);
        let view_bytes = fields[0].len() / 3;
        for (v, indices) in views.iter().enumerate() {
            let ours = unpack(
                &fields[0][v * view_bytes..(v + 1) * view_bytes],
                t,
                tt,
                p,
                crop as usize,
            );
            let cli = ffmpeg_frames(&path, indices, short, crop);
            for (k, (a, b)) in ours.iter().zip(&cli).enumerate() {
                // Exact: same decoder (libavcodec's vp9), same swscale call (bilinear,
                // YUV→RGB matrix and range from the frame, as vf_scale sets them).
                assert!(
                    a == b,
                    "clip {id} view {v} frame {k} (index {}): differs from the ffmpeg CLI, PSNR {:.1} dB",
                    indices[k],
                    psnr(a, b)
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 8 * 3 * 16);
    // The short clip repeats frames as the reference pads: 5 frames → 16 indices.
    let short_clip = samples
        .iter()
        .find(|(_, f)| i64_of(&f[2]) == 900004)
        .unwrap();
    let frames = unpack(
        &short_clip.1[0][..short_clip.1[0].len() / 3],
        t,
        tt,
        p,
        crop as usize,
    );
    assert_eq!(frames[0], frames[1]);
    assert_ne!(frames[0], frames[15]);
}

#[test]
fn python_reader_and_the_documented_reshape_give_the_same_frames() {
    let dir = tempfile::tempdir().unwrap();
    let root = demo_root(dir.path(), 1, 1);
    keep_first(&root, "train", 2);
    keep_first(&root, "validation", 1);
    let cfg = ssv2_config(
        dir.path(),
        &root,
        "num_frames = 4\nshort_side = 64\ncrop = 64",
    );
    lm4ve(&cfg, &["pipeline", "run"]).ok();
    let manifest = manifest_of(&cfg);
    let samples = read_samples(&manifest);
    let raw = dir.path().join("frames.raw");
    // SHARDS.md's numpy recipe, verbatim in spirit: [V, N, t·p·p·3] → [V, T, C, C, 3].
    let code = format!(
        "import sys, numpy as np; sys.path.insert(0, {scripts:?}); import read_shards\n\
         s = next(read_shards.samples({manifest:?}, split='train'))\n\
         x = s['tubelets']; V, T, t, p, C = x.shape[0], 4, 2, 16, 64; g = C // p\n\
         f = x.reshape(V, T // t, g, g, t, p, p, 3).transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(V, T, C, C, 3)\n\
         assert s['label'].shape == (1,) and s['video_id'].shape == (1,)\n\
         open({raw:?}, 'wb').write(f.tobytes())",
        scripts = format!("{}/scripts", env!("CARGO_MANIFEST_DIR")),
        manifest = manifest.display().to_string(),
        raw = raw.display().to_string(),
    );
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let o = Command::new(py).args(["-c", &code]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let first = &samples.iter().find(|(s, _)| s == "train").unwrap().1;
    let frames: Vec<u8> = unpack(&first[0], 4, 2, 16, 64).concat();
    assert_eq!(std::fs::read(&raw).unwrap(), frames);
}

#[test]
fn bad_clips_are_named_rejects_and_the_rest_completes() {
    let dir = tempfile::tempdir().unwrap();
    let root = demo_root(dir.path(), 1, 0);
    keep_first(&root, "train", 2);
    let good: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(split_file(&root, "train")).unwrap()).unwrap();
    let source = clip_path(&root, good[0]["id"].as_str().unwrap());
    let bytes = std::fs::read(&source).unwrap();
    std::fs::write(clip_path(&root, "800001"), &bytes[..bytes.len() * 6 / 10]).unwrap();
    std::fs::write(clip_path(&root, "800002"), b"").unwrap();
    std::fs::write(clip_path(&root, "800003"), "not a video\n".repeat(100)).unwrap();
    // Audio only: a webm with no video stream.
    let o = Command::new("ffmpeg")
        .args([
            "-v", "error", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "libopus",
        ])
        .arg(clip_path(&root, "800004"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A damaged VP9 frame header in the 6th packet (the block's payload starts 4 bytes
    // after the SimpleBlock data: track number, timecode, flags). Damage inside the
    // compressed data itself goes unnoticed by any decoder (VP9 has no checksums).
    let o = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=pos",
            "-of",
            "csv=p=0",
        ])
        .arg(&source)
        .output()
        .unwrap();
    let pos: Vec<usize> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let mut damaged = bytes.clone();
    for b in &mut damaged[pos[5] + 4..pos[5] + 8] {
        *b ^= 0xFF;
    }
    std::fs::write(clip_path(&root, "800008"), &damaged).unwrap();
    // Odd size and variable frame rate are fine.
    write_clip(&root, "800005", 241, 177, 20, None);
    write_clip(&root, "800006", 320, 240, 20, Some(&irregular_pts(20)));
    let t = "Moving [something] up";
    add_annotations(
        &root,
        "train",
        &[
            ("800001", t),
            ("800002", t),
            ("800003", t),
            ("800004", t),
            ("800005", t),
            ("800006", t),
            ("800008", t),
            ("800007", t),                      // no such clip
            ("800005", "Juggling [something]"), // template not in labels.json
            ("abc", t),                         // not an integer id
        ],
    );
    let cfg = ssv2_config(
        dir.path(),
        &root,
        "num_frames = 4\nshort_side = 64\ncrop = 64",
    );
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    r.no_panic().ok();
    assert!(r.stdout.contains("4 samples, 8 rejects"), "{}", r.stdout);
    let show = show_stage_json(&cfg, "ssv2_tokens");
    let rejects = std::fs::read_to_string(show["rejects_file"].as_str().unwrap()).unwrap();
    let rejects: Vec<serde_json::Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |sample: &str| {
        rejects
            .iter()
            .find(|r| r["sample"] == sample)
            .unwrap_or_else(|| panic!("no reject for {sample}: {rejects:?}"))
    };
    for (sample, file_end, reason) in [
        ("id 800001", "800001.webm", "truncated"),
        ("id 800002", "800002.webm", "empty file"),
        ("id 800003", "800003.webm", "not a readable video"),
        ("id 800004", "800004.webm", "no video stream"),
        ("id 800008", "800008.webm", "corrupt video packet 6"),
        ("id 800007", "800007.webm", "clip file missing"),
        ("id 800005", TRAIN_JSON, "not in labels.json"),
        ("id abc", TRAIN_JSON, "not an integer"),
    ] {
        let r = find(sample);
        assert!(r["file"].as_str().unwrap().ends_with(file_end), "{r}");
        assert!(r["reason"].as_str().unwrap().contains(reason), "{r}");
    }
    assert_eq!(rejects.len(), 8);
    let ids: Vec<i64> = read_samples(&manifest_of(&cfg))
        .iter()
        .map(|(_, f)| i64_of(&f[2]))
        .collect();
    assert!(ids.contains(&800005) && ids.contains(&800006), "{ids:?}");
    // Too many rejects fail the stage (checked when an artifact is assembled: fresh cache).
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("max_reject_fraction = 0.9", "max_reject_fraction = 0.05")
            .replace("dir = \"cache\"", "dir = \"cache2\""),
    )
    .unwrap();
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    assert_eq!(r.no_panic().code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("rejected") && r.stderr.contains("8000"),
        "{}",
        r.stderr
    );
}

#[test]
fn config_mistakes_exit_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = demo_root(dir.path(), 0, 0);
    for (extra, needle) in [
        ("crop = 100", "crop"),
        ("num_frames = 15", "num_frames"),
        ("crop = 256", "short_side"),
        ("views = 0", "views"),
        ("frames = 16", "frames"),
    ] {
        let cfg = ssv2_config(dir.path(), &root, extra);
        let r = lm4ve(&cfg, &["pipeline", "status"]);
        assert_eq!(r.no_panic().code, 2, "{extra}: {}", r.stderr);
        assert!(
            r.stderr.contains("video.toml:11") && r.stderr.contains(needle),
            "{extra}: {}",
            r.stderr
        );
    }
    // A label file that is not there blocks the stage (exit 1: the rest of a DAG could still
    // run), its message still naming the config line and the file.
    std::fs::remove_file(root.join(LABELS_DIR).join("labels.json")).unwrap();
    let cfg = ssv2_config(dir.path(), &root, "");
    let r = lm4ve(&cfg, &["pipeline", "run"]);
    assert_eq!(r.no_panic().code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("missing input"), "{}", r.stderr);
    assert!(
        r.stderr.contains("video.toml:") && r.stderr.contains("labels.json"),
        "{}",
        r.stderr
    );
}

#[test]
fn bytes_do_not_depend_on_threads_and_a_second_run_is_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let root = demo_root(dir.path(), 1, 1);
    let cfg = ssv2_config(
        dir.path(),
        &root,
        "num_frames = 8\nshort_side = 96\ncrop = 96\nrandom_views = 1",
    );
    let mut hashes = Vec::new();
    for j in ["1", "2"] {
        let cache = dir.path().join(format!("cache-j{j}"));
        let mut c = bin();
        c.arg("-c")
            .arg(&cfg)
            .arg("--cache")
            .arg(&cache)
            .args(["-j", j, "pipeline", "run"]);
        let r = output(c.output().unwrap());
        r.ok();
        assert!(r.stdout.contains("18 samples, 0 rejects"), "{}", r.stdout);
        let mut c = bin();
        c.arg("-c").arg(&cfg).arg("--cache").arg(&cache).args([
            "pipeline",
            "show",
            "ssv2_tokens",
            "--json",
        ]);
        let show: serde_json::Value =
            serde_json::from_str(&output(c.output().unwrap()).ok().stdout).unwrap();
        let m = std::fs::read(show["manifest"].as_str().unwrap()).unwrap();
        hashes.push(blake3::hash(&m));
        let meta = &show["meta"];
        assert_eq!(meta["num_classes"], 9);
        assert_eq!(meta["classes"].as_array().unwrap().len(), 9);
        assert_eq!(
            (meta["views"].as_u64(), meta["random_views"].as_u64()),
            (Some(1), Some(1))
        );
    }
    assert_eq!(hashes[0], hashes[1]);
    let mut c = bin();
    c.arg("-c")
        .arg(&cfg)
        .arg("--cache")
        .arg(dir.path().join("cache-j2"))
        .args(["pipeline", "run"]);
    let r = output(c.output().unwrap());
    assert!(r.ok().stdout.contains("fresh"), "{}", r.stdout);
}

#[test]
fn demo_data_writes_the_ssv2_layout_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let mut c = bin();
    c.args(["demo-data", "--out"]).arg(&out).args([
        "--pc-train-per-class",
        "1",
        "--pc-test-per-class",
        "1",
        "--video-train-per-class",
        "2",
        "--video-val-per-class",
        "1",
    ]);
    output(c.output().unwrap()).ok();
    let root = out.join("ssv2");
    let labels: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(root.join(LABELS_DIR).join("labels.json")).unwrap())
            .unwrap();
    assert_eq!(labels.len(), 9);
    assert_eq!(labels["Moving something from left to right"], "4");
    for (split, n) in [("train", 18), ("validation", 9)] {
        let list: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(split_file(&root, split)).unwrap()).unwrap();
        assert_eq!(list.len(), n);
        for a in &list {
            let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["id", "label", "placeholders", "template"]);
            let id = a["id"].as_str().unwrap();
            assert!(id.parse::<u64>().is_ok(), "{a}");
            let template = a["template"].as_str().unwrap();
            assert!(
                labels.contains_key(&template.replace(['[', ']'], "")),
                "{a}"
            );
            let thing = a["placeholders"][0].as_str().unwrap();
            assert_eq!(
                a["label"].as_str().unwrap(),
                template.replace("[something]", thing).to_lowercase()
            );
            assert!(clip_path(&root, id).is_file());
        }
    }
    let first = std::fs::read_dir(root.join(VIDEO_DIR))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let s = probe(
        &first,
        "stream=codec_name,height,width,r_frame_rate,nb_read_frames",
        true,
    );
    assert_eq!(s["codec_name"], "vp9");
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(s["r_frame_rate"], "12/1");
    let n: usize = s["nb_read_frames"].as_str().unwrap().parse().unwrap();
    assert!((24..=48).contains(&n), "{n} frames: 2–4 s at 12 fps");
}

/// The `frames` layout: every frame of the clip, as JPEG, within a PSNR bound of the frames
/// the ffmpeg CLI gives; the Python reader splits them; bytes do not depend on threads.
#[test]
fn frames_layout_keeps_every_frame_as_jpeg_close_to_the_cli_frames() {
    use lm4ve_stages::ssv2::jpeg::{psnr, JpegDecoder};
    let dir = tempfile::tempdir().unwrap();
    let root = demo_root(dir.path(), 1, 1);
    keep_first(&root, "train", 3);
    keep_first(&root, "validation", 1);
    write_clip(&root, "9001", 75, 50, 7, None); // odd size
    add_annotations(
        &root,
        "train",
        &[("9001", "Spinning [something] clockwise")],
    );
    let cfg = ssv2_config(
        dir.path(),
        &root,
        "layout = \"frames\"\nnum_frames = 4\nshort_side = 48\ncrop = 48",
    );
    let mut manifests = Vec::new();
    for j in ["1", "2"] {
        let mut c = bin();
        c.arg("-c")
            .arg(&cfg)
            .arg("--cache")
            .arg(dir.path().join(format!("cache-j{j}")))
            .args(["-j", j, "pipeline", "run"]);
        let r = output(c.output().unwrap());
        assert!(
            r.ok().stdout.contains("5 samples, 0 rejects"),
            "{}",
            r.stdout
        );
        let mut c = bin();
        c.arg("-c")
            .arg(&cfg)
            .arg("--cache")
            .arg(dir.path().join(format!("cache-j{j}")))
            .args(["pipeline", "show", "ssv2_tokens", "--json"]);
        let show: serde_json::Value =
            serde_json::from_str(&output(c.output().unwrap()).ok().stdout).unwrap();
        manifests.push(PathBuf::from(show["manifest"].as_str().unwrap()));
    }
    assert_eq!(
        blake3::hash(&std::fs::read(&manifests[0]).unwrap()),
        blake3::hash(&std::fs::read(&manifests[1]).unwrap()),
        "the JPEG bytes do not depend on the thread count"
    );
    let samples = read_samples(&manifests[0]);
    let mut decoder = JpegDecoder::new().unwrap();
    for (_, f) in &samples {
        let id = i64_of(&f[6]);
        let path = clip_path(&root, &id.to_string());
        let n = i64_of(&f[2]) as usize;
        let count = probe(&path, "stream=nb_read_frames", true)["nb_read_frames"]
            .as_str()
            .unwrap()
            .parse::<usize>()
            .unwrap();
        assert_eq!((n, i64_of(&f[3]) as usize), (count, count), "clip {id}");
        let (h, w) = (i64_of(&f[4][..8]) as usize, i64_of(&f[4][8..]) as usize);
        // The CLI's RGB frames at the decoded size.
        let o = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&path)
            .args(["-vsync", "0", "-pix_fmt", "rgb24", "-f", "rawvideo", "-"])
            .output()
            .unwrap();
        assert_eq!(o.stdout.len(), n * w * h * 3, "clip {id}");
        let mut start = 0;
        for k in 0..n {
            let end = i64_of(&f[1][k * 8..k * 8 + 8]) as usize;
            let rgb = decoder.decode(&f[0][start..end]).unwrap();
            assert_eq!((rgb.width, rgb.height), (w, h));
            let cli = &o.stdout[k * w * h * 3..(k + 1) * w * h * 3];
            let p = psnr(cli, &rgb.data);
            assert!(p > 30.0, "clip {id} frame {k}: {p:.1} dB");
            start = end;
        }
    }
    // SHARDS.md's reader splits the same files.
    let code = format!(
        "import sys; sys.path.insert(0, {scripts:?}); import read_shards\n\
         for s in read_shards.samples({manifest:?}):\n\
         \x20   fs = read_shards.jpeg_frames(s)\n\
         \x20   assert len(fs) == int(s['frames'][0]) and all(f[:2] == b'\\xff\\xd8' and f[-2:] == b'\\xff\\xd9' for f in fs)\n\
         print('ok')",
        scripts = format!("{}/scripts", env!("CARGO_MANIFEST_DIR")),
        manifest = manifests[0].display().to_string(),
    );
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let o = Command::new(py).args(["-c", &code]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
