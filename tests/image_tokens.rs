//! Stage `image.tokens` end to end through the release binary, on files in the real formats
//! (JPEG through libjpeg-turbo, PNG through the png crate, a tar through the tar crate, a
//! parquet written with the parquet crate): ImageFolder order and classes; the three layouts
//! give the same samples; grayscale, CMYK and PNG-named-.JPEG decode as PIL does; each bad
//! input is a named reject; the evaluation views and decoded pixels equal what Pillow +
//! torchvision's transform give on the committed fixtures (tests/fixtures/images,
//! scripts/fixtures/make_image_fixtures.py); `demo-data` writes the ImageNet layout.

mod common;
use common::*;
use lm4ve_pipeline::shard::ShardReader;
use lm4ve_stages::images::decode::{cmyk_inverted_to_rgb, decode, Rgb};
use lm4ve_stages::images::demo::{synth_image, write_png};
use lm4ve_stages::images::resize::eval_view;
use lm4ve_stages::images::turbo::{Decoder, Encoder};
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const WNIDS: [&str; 3] = ["n01440764", "n01443537", "n01484850"];

fn config(dir: &Path, name: &str, params: &str) -> PathBuf {
    // Defaults a test's own params override.
    let defaults: String = [
        "shard_samples = 5",
        "eval_size = 48",
        "max_side = 160",
        "max_image_bytes = 65536",
    ]
    .iter()
    .filter(|d| !params.contains(d.split(" =").next().unwrap()))
    .map(|d| format!("{d}\n"))
    .collect();
    let text = format!(
        r#"[cache]
dir = "cache"

[stages.image_tokens]
kind = "image.tokens"
max_reject_fraction = 0.9

[stages.image_tokens.params]
{defaults}{params}
"#
    );
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Every sample: (split, fields by name).
fn samples(cfg: &Path) -> Vec<(String, BTreeMap<String, Vec<u8>>)> {
    let show = show_stage_json(cfg, "image_tokens");
    let manifest = PathBuf::from(show["manifest"].as_str().unwrap());
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let names: Vec<String> = m["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    let base = manifest.parent().unwrap();
    let mut out = Vec::new();
    for s in m["shards"].as_array().unwrap() {
        let mut r = ShardReader::open(&base.join(s["path"].as_str().unwrap())).unwrap();
        for i in 0..r.len() {
            let fields = r.read(i).unwrap().fields;
            let map = names.iter().cloned().zip(fields).collect();
            out.push((s["split"].as_str().unwrap().to_string(), map));
        }
    }
    out
}

fn i64s(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn jpeg_of(f: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let n = i64s(&f["jpeg_bytes"])[0] as usize;
    f["jpeg"][..n].to_vec()
}

fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

/// One image file's bytes of each kind the tests use.
fn image_bytes(kind: &str, seed: u64, w: usize, h: usize) -> Vec<u8> {
    let rgb = synth_image(seed as usize, &mut rng(seed), w, h);
    let mut enc = Encoder::new().unwrap();
    match kind {
        "jpeg" => enc.encode_rgb(&rgb, w, h, 90).unwrap(),
        "gray" => {
            let g: Vec<u8> = rgb.chunks_exact(3).map(|p| p[1]).collect();
            enc.encode(&g, w, h, 1, 90).unwrap()
        }
        "cmyk" => {
            let c: Vec<u8> = rgb
                .chunks_exact(3)
                .flat_map(|p| [p[0], p[1], p[2], 200])
                .collect();
            enc.encode(&c, w, h, 4, 90).unwrap()
        }
        "png" => {
            let tmp = tempfile::NamedTempFile::new().unwrap();
            write_png(tmp.path(), w, h, 3, &rgb).unwrap();
            std::fs::read(tmp.path()).unwrap()
        }
        other => panic!("{other}"),
    }
}

/// The good images of a small ImageNet: (split, class, file name, bytes), ImageFolder order.
fn good_images() -> Vec<(&'static str, &'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (split, n) in [("train", 4), ("val", 2)] {
        for (c, wnid) in WNIDS.iter().enumerate() {
            for i in 0..n {
                let seed = (c * 10 + i) as u64 + if split == "val" { 100 } else { 0 };
                let (w, h) = (60 + 13 * i, 140 - 17 * c);
                let (kind, name) = match (c, i) {
                    (0, 1) => ("gray", format!("{wnid}_{i}.JPEG")),
                    (1, 2) => ("cmyk", format!("{wnid}_{i}.JPEG")),
                    (2, 0) => ("png", format!("{wnid}_{i}.JPEG")), // a PNG named .JPEG
                    (2, 3) => ("png", format!("{wnid}_{i}.png")),
                    _ => ("jpeg", format!("{wnid}_{i}.JPEG")),
                };
                out.push((split, *wnid, name, image_bytes(kind, seed, w, h)));
            }
        }
    }
    // ImageFolder order: class, then file name.
    out.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
    out
}

fn write_folder(root: &Path, images: &[(&str, &str, String, Vec<u8>)]) {
    for (split, class, name, bytes) in images {
        let d = root.join(split).join(class);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    }
}

fn write_tar(path: &Path, split: &str, images: &[(&str, &str, String, Vec<u8>)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    // Archive order differs from ImageFolder order (reversed): the stage sorts.
    for (s, class, name, bytes) in images.iter().rev().filter(|x| x.0 == split) {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("{s}/{class}/{name}"), &bytes[..])
            .unwrap();
    }
    // A directory member and a member at the wrong depth are not samples (as the reference).
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_cksum();
    b.append_data(&mut h, format!("{split}/{}/", WNIDS[0]), &[][..])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_cksum();
    b.append_data(&mut h, format!("{split}/README.txt"), &b"abc"[..])
        .unwrap();
    b.finish().unwrap();
}

/// A Hugging Face imagenet-1k style parquet: image {bytes, path}, label; ClassLabel names in
/// the `huggingface` metadata; two row groups; snappy.
fn write_parquet(path: &Path, split: &str, images: &[(&str, &str, String, Vec<u8>)]) {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;
    let schema = Arc::new(
        parse_message_type(
            "message schema { optional group image { optional binary bytes; optional binary \
             path (STRING); } optional int64 label; }",
        )
        .unwrap(),
    );
    let hf = serde_json::json!({"info": {"features": {
        "image": {"_type": "Image"},
        "label": {"_type": "ClassLabel", "names": WNIDS}}}});
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "huggingface".into(),
                hf.to_string(),
            )]))
            .build(),
    );
    let mut w =
        SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, props).unwrap();
    // Rows in a shuffled order (every third first): the stage sorts by (label, path).
    let mut rows: Vec<_> = images.iter().filter(|x| x.0 == split).collect();
    rows.sort_by_key(|x| (x.2.len() % 3, x.2.clone()));
    for chunk in rows.chunks(rows.len().div_ceil(2)) {
        let mut rg = w.next_row_group().unwrap();
        let bytes: Vec<ByteArray> = chunk.iter().map(|x| ByteArray::from(x.3.clone())).collect();
        let paths: Vec<ByteArray> = chunk
            .iter()
            .map(|x| ByteArray::from(x.2.as_str()))
            .collect();
        let labels: Vec<i64> = chunk
            .iter()
            .map(|x| WNIDS.iter().position(|c| c == &x.1).unwrap() as i64)
            .collect();
        let defs2 = vec![2i16; chunk.len()];
        let defs1 = vec![1i16; chunk.len()];
        let mut c = rg.next_column().unwrap().unwrap();
        c.typed::<ByteArrayType>()
            .write_batch(&bytes, Some(&defs2), None)
            .unwrap();
        c.close().unwrap();
        let mut c = rg.next_column().unwrap().unwrap();
        c.typed::<ByteArrayType>()
            .write_batch(&paths, Some(&defs2), None)
            .unwrap();
        c.close().unwrap();
        let mut c = rg.next_column().unwrap().unwrap();
        c.typed::<Int64Type>()
            .write_batch(&labels, Some(&defs1), None)
            .unwrap();
        c.close().unwrap();
        rg.close().unwrap();
    }
    w.close().unwrap();
}

fn run_ok(cfg: &Path) -> Run {
    let r = lm4ve(cfg, &["pipeline", "run", "--stage", "image_tokens"]);
    r.no_panic();
    r.ok();
    r
}

#[test]
fn folder_layout_order_classes_fields_and_decoding_as_pil() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imagenet");
    let images = good_images();
    write_folder(&root, &images);
    // Not an image extension: skipped as ImageFolder skips it (no sample, no reject).
    std::fs::write(root.join("train").join(WNIDS[0]).join("notes.txt"), b"x").unwrap();
    let cfg = config(
        dir.path(),
        "f.toml",
        &format!("root = \"{}\"", root.display()),
    );
    let r = run_ok(&cfg);
    assert!(r.stdout.contains("18 samples, 0 rejects"), "{}", r.stdout);
    let show = show_stage_json(&cfg, "image_tokens");
    let meta = &show["meta"];
    assert_eq!(meta["num_classes"], 3);
    assert_eq!(meta["classes"], serde_json::json!(WNIDS));
    assert_eq!(meta["label_counts"]["train"]["1"], 4);
    assert_eq!(meta["label_counts"]["val"]["2"], 2);
    // Re-encoded: the CMYK JPEG (train and val's class-1 image 2 is train only), the PNGs.
    assert_eq!(meta["images_reencoded"], 4, "{meta}");
    assert_eq!(meta["images_original"], 14, "{meta}");
    assert!(
        meta["modes"]["CMYK"] == 1 && meta["modes"]["L"] == 2,
        "{meta}"
    );
    let got = samples(&cfg);
    assert_eq!(got.len(), images.len());
    let mut per_split: BTreeMap<&str, i64> = BTreeMap::new();
    for ((split, f), (s, class, name, bytes)) in got.iter().zip(&images) {
        assert_eq!(split, s);
        let idx = per_split.entry(s).or_insert(0);
        assert_eq!(i64s(&f["index"]), vec![*idx], "{name}");
        *idx += 1;
        let label = WNIDS.iter().position(|c| c == class).unwrap() as i64;
        assert_eq!(i64s(&f["label"]), vec![label]);
        // The eval view is DeiT's transform of PIL's RGB (the fixture test pins both to PIL).
        let d = decode(bytes, u64::MAX).unwrap();
        assert_eq!(f["image"], eval_view(&d.rgb, 48), "{name}");
        let jpeg = jpeg_of(f);
        assert_eq!(
            i64s(&f["size"]),
            vec![d.rgb.height as i64, d.rgb.width as i64]
        );
        if d.jpeg_as_is {
            assert_eq!(
                &jpeg, bytes,
                "{name}: an RGB/gray JPEG within max_side is kept as is"
            );
        } else {
            assert!(
                jpeg.starts_with(&[0xFF, 0xD8, 0xFF]),
                "{name}: re-encoded as JPEG"
            );
            let back = decode(&jpeg, u64::MAX).unwrap();
            assert_eq!(
                (back.rgb.width, back.rgb.height),
                (d.rgb.width, d.rgb.height)
            );
            let mse: f64 = back
                .rgb
                .data
                .iter()
                .zip(&d.rgb.data)
                .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                .sum::<f64>()
                / d.rgb.data.len() as f64;
            let psnr = 10.0 * (255.0f64 * 255.0 / mse).log10();
            // Per-pixel uniform noise of ±20 is the hardest case for 4:2:0 JPEG: ~27 dB.
            assert!(psnr > 25.0, "{name}: PSNR {psnr:.1} dB");
        }
        // By content: the PNG named .JPEG decodes as PNG, gray replicates, CMYK as Pillow.
        if name.ends_with("_0.JPEG") && *class == WNIDS[2] {
            assert_eq!(d.format, "PNG");
        }
        if d.mode == "L" {
            assert!(d
                .rgb
                .data
                .chunks_exact(3)
                .all(|p| p[0] == p[1] && p[1] == p[2]));
        }
        if d.mode == "CMYK" {
            let mut dec = Decoder::new().unwrap();
            let h = dec.header(bytes).unwrap();
            let cmyk = dec.decode(bytes, &h).unwrap();
            assert_eq!(cmyk.channels, 4);
            assert_eq!(d.rgb.data, cmyk_inverted_to_rgb(&cmyk.data));
        }
    }
}

#[test]
fn layouts_give_the_same_samples() {
    let dir = tempfile::tempdir().unwrap();
    let images = good_images();
    let folder = dir.path().join("folder");
    write_folder(&folder, &images);
    let tars = dir.path().join("tar");
    std::fs::create_dir_all(&tars).unwrap();
    write_tar(&tars.join("train.tar"), "train", &images);
    write_tar(&tars.join("val.tar"), "val", &images);
    let pq = dir.path().join("hf").join("data");
    std::fs::create_dir_all(&pq).unwrap();
    write_parquet(&pq.join("train-00000-of-00001.parquet"), "train", &images);
    write_parquet(
        &pq.join("validation-00000-of-00001.parquet"),
        "val",
        &images,
    );
    let runs = [
        ("folder", format!("root = \"{}\"", folder.display())),
        (
            "tar",
            format!("format = \"tar\"\nroot = \"{}\"", tars.display()),
        ),
        (
            "parquet",
            format!(
                "format = \"parquet\"\nroot = \"{}\"",
                pq.parent().unwrap().display()
            ),
        ),
    ];
    let mut all = Vec::new();
    for (name, params) in runs {
        let d = dir.path().join(name).join("cfg");
        std::fs::create_dir_all(&d).unwrap();
        let cfg = config(&d, "c.toml", &params);
        let r = run_ok(&cfg);
        assert!(
            r.stdout.contains("18 samples, 0 rejects"),
            "{name}: {}",
            r.stdout
        );
        let meta = show_stage_json(&cfg, "image_tokens")["meta"].clone();
        assert_eq!(meta["classes"], serde_json::json!(WNIDS), "{name}");
        all.push((name, samples(&cfg)));
    }
    for (name, s) in &all[1..] {
        assert_eq!(s.len(), all[0].1.len(), "{name}");
        for (i, (a, b)) in all[0].1.iter().zip(s).enumerate() {
            assert_eq!(a, b, "{name}: sample {i} differs from the folder layout's");
        }
    }
}

#[test]
fn bad_inputs_are_named_rejects_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imagenet");
    let images = good_images();
    write_folder(&root, &images);
    let cls = root.join("train").join(WNIDS[1]);
    let good = image_bytes("jpeg", 5, 80, 60);
    std::fs::write(cls.join("a_truncated.JPEG"), &good[..good.len() / 2]).unwrap();
    std::fs::write(cls.join("b_empty.JPEG"), b"").unwrap();
    std::fs::write(cls.join("c_text.JPEG"), b"<html>not found</html>").unwrap();
    let mut garbage = good.clone();
    for b in garbage.iter_mut().skip(200).take(400) {
        *b = 0xFF;
    }
    // A PNG whose header claims 20000 x 10000 pixels (over PIL's 2 x MAX_IMAGE_PIXELS).
    let bomb = {
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(20000u32.to_be_bytes());
        ihdr.extend(10000u32.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        v.extend(13u32.to_be_bytes());
        v.extend(&ihdr);
        v.extend(crc32(&ihdr).to_be_bytes());
        v
    };
    std::fs::write(cls.join("d_bomb.png"), &bomb).unwrap();
    std::fs::write(cls.join("e_gif.JPEG"), b"GIF89a\x01\x00\x01\x00").unwrap();
    // A class folder with no image (only a text file).
    let empty = root.join("train").join("n09999999");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("readme.txt"), b"x").unwrap();
    let cfg = config(
        dir.path(),
        "b.toml",
        &format!("root = \"{}\"", root.display()),
    );
    let r = run_ok(&cfg);
    assert!(r.stdout.contains("18 samples, 6 rejects"), "{}", r.stdout);
    let show = show_stage_json(&cfg, "image_tokens");
    let rejects = std::fs::read_to_string(show["rejects_file"].as_str().unwrap()).unwrap();
    let want = [
        ("a_truncated.JPEG", "truncated JPEG"),
        ("b_empty.JPEG", "empty file (0 bytes)"),
        ("c_text.JPEG", "not an image"),
        ("d_bomb.png", "exceeds max_pixels = 178956970"),
        ("e_gif.JPEG", "a GIF image"),
        ("n09999999", "empty class folder"),
    ];
    for (file, reason) in want {
        let line = rejects
            .lines()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("no reject for {file}:\n{rejects}"));
        assert!(line.contains(reason), "{file}: {line}");
        assert!(
            line.contains("fix") || line.contains("raise"),
            "{file}: no fix: {line}"
        );
    }
    // The empty class keeps an index (sorted last here) and no other sample moved.
    assert_eq!(show["meta"]["num_classes"], 4);
    // The indices of the train samples after the rejects are unchanged: 5 rejects sit in
    // class 1, so train indices run 0..4, 4..8 → 4..13 with gaps.
    let got = samples(&cfg);
    let idx: Vec<i64> = got
        .iter()
        .filter(|(s, _)| s == "train")
        .map(|(_, f)| i64s(&f["index"])[0])
        .collect();
    assert_eq!(idx, vec![0, 1, 2, 3, 9, 10, 11, 12, 13, 14, 15, 16]);
    // A too-small max_image_bytes names the bytes needed.
    let cfg2 = config(
        dir.path(),
        "small.toml",
        &format!("root = \"{}\"\nmax_image_bytes = 200", root.display()),
    );
    let r = lm4ve(&cfg2, &["pipeline", "run", "--stage", "image_tokens"]);
    r.no_panic();
    assert!(
        r.stdout.contains("max_image_bytes") || r.stderr.contains("max_image_bytes"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
}

/// PNG's CRC-32 (ISO-HDLC).
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images")
}

#[test]
fn decode_and_eval_view_equal_pil_and_torchvision_on_fixtures() {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("index.json")).unwrap()).unwrap();
    let files = index["files"].as_object().unwrap();
    assert!(files.len() >= 8);
    // Through the binary: one class folder holding every fixture, eval sizes 64 and 100.
    let dir = tempfile::tempdir().unwrap();
    let cls = dir.path().join("imagenet/val/n00000001");
    std::fs::create_dir_all(&cls).unwrap();
    let mut names: Vec<&String> = files.keys().collect();
    names.sort();
    for n in &names {
        std::fs::copy(fixtures().join(n), cls.join(n)).unwrap();
    }
    for s in [64usize, 100] {
        let d = dir.path().join(format!("s{s}"));
        std::fs::create_dir_all(&d).unwrap();
        let cfg = config(
            &d,
            "c.toml",
            &format!(
                "root = \"{}\"\neval_size = {s}\nmax_side = 512",
                dir.path().join("imagenet").display()
            ),
        );
        run_ok(&cfg);
        let got = samples(&cfg);
        assert_eq!(got.len(), names.len());
        for ((_, f), n) in got.iter().zip(&names) {
            let stem = n.rsplit_once('.').unwrap().0;
            let want = std::fs::read(fixtures().join(format!("{stem}.eval{s}.bin"))).unwrap();
            assert!(
                f["image"] == want,
                "{n}: eval view {s} differs from PIL + torchvision"
            );
        }
    }
    // Decoded pixels, file by file (PIL's convert('RGB')).
    for n in names {
        let bytes = std::fs::read(fixtures().join(n)).unwrap();
        let d = decode(&bytes, u64::MAX).unwrap();
        let stem = n.rsplit_once('.').unwrap().0;
        let want = std::fs::read(fixtures().join(format!("{stem}.rgb.bin"))).unwrap();
        let e = &files[n.as_str()];
        assert_eq!(d.mode, e["mode"].as_str().unwrap(), "{n}");
        assert_eq!(
            (d.rgb.width as u64, d.rgb.height as u64),
            (e["width"].as_u64().unwrap(), e["height"].as_u64().unwrap())
        );
        let diff = d.rgb.data.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            diff, 0,
            "{n}: {diff} bytes differ from PIL's convert('RGB')"
        );
        let _ = Rgb {
            width: 0,
            height: 0,
            data: vec![],
        };
    }
}

#[test]
fn demo_data_writes_imagenet_layout_that_the_demo_stage_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let mut c = bin();
    c.args(["demo-data", "--out"])
        .arg(&out)
        .args(["--pc-train-per-class", "1", "--pc-test-per-class", "1"])
        .args(["--video-train-per-class", "0", "--video-val-per-class", "0"])
        .args(["--av-train", "0", "--av-val", "0"])
        .args([
            "--image-train-per-class",
            "12",
            "--image-val-per-class",
            "3",
        ]);
    output(c.output().unwrap()).ok();
    let root = out.join("imagenet");
    let classes: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(root.join("train"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(classes.len(), 5);
    // The demo's table of configs/demo.toml, pointed at this tree.
    let demo =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/demo.toml"))
            .unwrap();
    // The `[stages.image_tokens]` table and its params, up to the next stage's comment.
    let from = demo.find("[stages.image_tokens]").unwrap();
    let rest = &demo[from..];
    let table = &rest[..rest
        .find("\n#")
        .or_else(|| rest.find("\n[stages.train"))
        .unwrap_or(rest.len())];
    let table = table.replace("../demo-data/imagenet", &root.display().to_string());
    let cfg = dir.path().join("d.toml");
    std::fs::write(&cfg, format!("[cache]\ndir = \"cache\"\n\n{table}")).unwrap();
    let r = run_ok(&cfg);
    assert!(r.stdout.contains("75 samples, 1 rejects"), "{}", r.stdout);
    let show = show_stage_json(&cfg, "image_tokens");
    let rejects = std::fs::read_to_string(show["rejects_file"].as_str().unwrap()).unwrap();
    assert!(
        rejects.contains("_truncated.JPEG") && rejects.contains("truncated JPEG"),
        "{rejects}"
    );
    let meta = &show["meta"];
    assert_eq!(meta["classes"], serde_json::json!(classes));
    assert_eq!(meta["modes"]["L"], 1, "{meta}");
    assert_eq!(meta["modes"]["CMYK"], 1, "{meta}");
    assert!(meta["modes"]["PNG"].is_null());
    let got = samples(&cfg);
    assert_eq!(got[0].1["image"].len(), 64 * 64 * 3);
}
