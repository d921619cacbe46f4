//! Issue 16, "a shared cache no teammate can break": each reproduction of the issue, through
//! the real binary, on a directory remote (and loopback sockets for the transport cases).
//! A teammate — or a crashed machine — can write anything into the remote or the cache
//! directory; lm4ve must refuse it with a named warning and recompute, never panic, never
//! use it silently, never touch a file outside the cache.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cache-trust-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The demo point clouds, once per test process.
fn demo() -> &'static (PathBuf, PathBuf) {
    static DEMO: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    DEMO.get_or_init(|| {
        let so = demo_data(&scratch("demo"), 4);
        (
            so.join("training_objectdataset.h5"),
            so.join("test_objectdataset.h5"),
        )
    })
}

/// One machine: its config (one `pc.tokens` stage) and cache, sharing `remote`.
struct Machine {
    cfg: PathBuf,
    cache: PathBuf,
}

fn machine(dir: &Path, name: &str, remote: &str) -> Machine {
    let (train, test) = demo();
    let cfg = pc_config(dir, &format!("{name}.toml"), train, test, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "dir = \"cache\"",
        &format!("dir = \"cache-{name}\"\n{remote}"),
    );
    std::fs::write(&cfg, text).unwrap();
    Machine {
        cfg,
        cache: dir.join(format!("cache-{name}")),
    }
}

impl Machine {
    fn run(&self, args: &[&str]) -> Run {
        self.run_env(&[], args)
    }
    fn run_env(&self, env: &[(&str, &str)], args: &[&str]) -> Run {
        let mut c = bin();
        c.env_remove("LM4VE_REMOTE");
        for (k, v) in env {
            c.env(k, v);
        }
        c.arg("-c").arg(&self.cfg).args(args);
        let r = output(c.output().expect("spawn lm4ve"));
        r.no_panic();
        r
    }
    fn key(&self) -> String {
        let v = show_json(&self.cfg);
        let m = PathBuf::from(v["manifest"].as_str().unwrap());
        m.parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

/// A machine that computed and pushed pc_tokens to a directory remote, and its key.
fn pushed(dir: &Path) -> (PathBuf, Machine, String) {
    let remote = dir.join("shared");
    let cfg_remote = format!("remote = \"{}\"", remote.display());
    let a = machine(dir, "a", &cfg_remote);
    a.run(&["pipeline", "run", "--push"]).ok();
    let key = a.key();
    assert!(remote
        .join("artifacts")
        .join(&key)
        .join("manifest.json")
        .is_file());
    (remote, a, key)
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn write_json(p: &Path, v: &serde_json::Value) {
    std::fs::write(p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir(dir).into_iter().filter(|p| p.is_file()).collect()
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The reference: what a machine with no remote builds for the same config.
fn reference_manifest(dir: &Path) -> String {
    let r = machine(dir, "ref", "");
    r.run(&["pipeline", "run"]).ok();
    manifest_hash(&r.cfg)
}

// ---- 1. symlinks on a directory remote ------------------------------------------------------

#[test]
fn remote_gc_and_push_never_follow_a_symlink_out_of_the_remote() {
    let dir = scratch("links");
    let (remote, a, key) = pushed(&dir);
    // A user's files, and a link to them planted inside the remote.
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("thesis.tex"), "\\documentclass{article}").unwrap();
    std::os::unix::fs::symlink(&home, remote.join("artifacts/trap")).unwrap();
    for dry in [true, false] {
        let mut args = vec!["cache", "gc", "--remote"];
        if dry {
            args.push("--dry-run");
        }
        let r = a.run(&args);
        r.ok();
        assert!(
            r.stdout.contains("0 artifacts removed"),
            "gc counted the link as an artifact: {}",
            r.stdout
        );
        assert!(r.stdout.contains("REFUSED"), "{}", r.stdout);
        assert!(
            home.join("thesis.tex").is_file(),
            "gc deleted a file outside the remote"
        );
    }
    // --push: the artifact's own directory on the remote replaced by a link.
    let outside = dir.join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    let art = remote.join("artifacts").join(&key);
    std::fs::remove_dir_all(&art).unwrap();
    std::os::unix::fs::symlink(&outside, &art).unwrap();
    let r = a.run(&["cache", "push", "--stage", "pc_tokens"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert!(
        files_under(&outside).is_empty(),
        "push wrote through a link: {:?}",
        files_under(&outside)
    );
    // An object that is a link (to the zero device) is refused, not read.
    let b = machine(&dir, "b", &format!("remote = \"{}\"", remote.display()));
    std::fs::remove_file(&art).unwrap();
    a.run(&["cache", "push", "--stage", "pc_tokens"]).ok();
    let m = json(&art.join("manifest.json"));
    let h = m["shards"][0]["blake3"].as_str().unwrap().to_string();
    let obj = remote.join("objects").join(&h[..2]).join(&h);
    std::fs::remove_file(&obj).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &obj).unwrap();
    let t0 = Instant::now();
    let r = b.run(&["pipeline", "run"]);
    r.ok();
    assert!(t0.elapsed() < Duration::from_secs(60));
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert!(r.stdout.contains("built"), "{}", r.stdout);
    assert!(files_under(&b.cache.join("tmp")).is_empty());
}

// ---- 2. a key that is not ASCII -------------------------------------------------------------

#[test]
fn a_non_ascii_key_is_a_warning_not_a_panic() {
    let dir = scratch("utf8");
    let (remote, _a, key) = pushed(&dir);
    let mpath = remote.join("artifacts").join(&key).join("manifest.json");
    let mut m = json(&mpath);
    m["key"] = "01234567890é".into();
    write_json(&mpath, &m);
    let b = machine(&dir, "b", &format!("remote = \"{}\"", remote.display()));
    let r = b.run(&["cache", "pull"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("not valid"), "{}", r.stderr);
    let r = b.run(&["pipeline", "run"]);
    r.ok();
    assert!(r.stderr.contains("not using"), "{}", r.stderr);
    assert!(r.stdout.contains("built"), "{}", r.stdout);
    // Local verify on a directory with such a name.
    std::fs::create_dir_all(b.cache.join("artifacts/01234567890é")).unwrap();
    let r = b.run(&["cache", "verify"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("not a content key"), "{}", r.stdout);
}

// ---- 3. a correctly hashed shard whose header lies ------------------------------------------

/// 123 bytes: a valid preamble and header claiming u64::MAX samples, no offset index.
fn lying_shard() -> Vec<u8> {
    let header = format!(
        r#"{{"format":"lm4ve-shard","fields":[{{"name":"x","dtype":"uint8","shape":[4]}}],"samples":{}}}"#,
        u64::MAX
    );
    let mut b = b"LM4VSHRD".to_vec();
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&(header.len() as u32).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b
}

fn store(root: &Path, bytes: &[u8]) -> String {
    let h = blake3::hash(bytes).to_hex().to_string();
    let p = root.join("objects").join(&h[..2]).join(&h);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
    h
}

#[test]
fn a_shard_claiming_u64_max_samples_is_refused_by_pull_and_by_verify() {
    let dir = scratch("u64max");
    let (remote, _a, key) = pushed(&dir);
    let bad = lying_shard();
    let h = store(&remote, &bad);
    // Manifest and unit record agree with each other; only the shard header lies.
    let art = remote.join("artifacts").join(&key);
    let mut m = json(&art.join("manifest.json"));
    let old = m["shards"][0]["blake3"].as_str().unwrap().to_string();
    m["shards"][0]["blake3"] = h.clone().into();
    m["shards"][0]["bytes"] = bad.len().into();
    m["shards"][0]["path"] = format!("../../objects/{}/{h}", &h[..2]).into();
    write_json(&art.join("manifest.json"), &m);
    for u in std::fs::read_dir(art.join("units")).unwrap().flatten() {
        let mut rec = json(&u.path());
        for s in rec["shards"].as_array_mut().unwrap() {
            if s["blake3"] == old {
                s["blake3"] = h.clone().into();
                s["bytes"] = bad.len().into();
            }
        }
        std::fs::write(u.path(), serde_json::to_vec(&rec).unwrap()).unwrap();
    }
    let b = machine(&dir, "b", &format!("remote = \"{}\"", remote.display()));
    let r = b.run(&["pipeline", "run"]);
    r.ok();
    assert!(r.stderr.contains("offset index"), "{}", r.stderr);
    assert!(r.stdout.contains("built"), "{}", r.stdout);
    // Local verify: the same shard named by a local manifest is reported, not "0 corrupt".
    b.run(&["cache", "verify"]).ok();
    let key_b = b.key();
    assert_eq!(key_b, key);
    let local = b.cache.join("artifacts").join(&key).join("manifest.json");
    let mut lm = json(&local);
    store(&b.cache, &bad);
    lm["shards"][0]["blake3"] = h.clone().into();
    lm["shards"][0]["bytes"] = bad.len().into();
    lm["shards"][0]["path"] = format!("../../objects/{}/{h}", &h[..2]).into();
    write_json(&local, &lm);
    let r = b.run(&["cache", "verify"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("CORRUPT shard"), "{}", r.stdout);
}

// ---- 4. unbounded downloads and silent servers ----------------------------------------------

#[test]
fn a_remote_object_longer_than_announced_is_cut_off_and_its_temp_file_removed() {
    let dir = scratch("toolong");
    let (remote, _a, key) = pushed(&dir);
    let m = json(&remote.join("artifacts").join(&key).join("manifest.json"));
    let h = m["shards"][0]["blake3"].as_str().unwrap().to_string();
    let announced = m["shards"][0]["bytes"].as_u64().unwrap();
    let obj = remote.join("objects").join(&h[..2]).join(&h);
    // 64 MB where the record says a few KB.
    let f = std::fs::File::create(&obj).unwrap();
    f.set_len(64 << 20).unwrap();
    let b = machine(&dir, "b", &format!("remote = \"{}\"", remote.display()));
    let r = b.run(&["cache", "pull"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("more than the {announced} bytes")),
        "{}",
        r.stderr
    );
    assert!(files_under(&b.cache.join("tmp")).is_empty());
    assert!(!b.cache.join("objects").join(&h[..2]).join(&h).exists());
}

/// A loopback server that accepts connections and never answers; it stops with the test.
fn silent_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().take(64).flatten() {
            held.push(s);
        }
    });
    port
}

#[test]
fn a_server_that_never_answers_times_out_and_the_run_computes() {
    let dir = scratch("silent");
    let port = silent_server();
    let m = machine(
        &dir,
        "a",
        &format!("remote = \"http://127.0.0.1:{port}/lab\""),
    );
    let t0 = Instant::now();
    let r = m.run_env(&[("LM4VE_REMOTE_TIMEOUT_SECS", "1")], &["pipeline", "run"]);
    r.ok();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(60), "hung for {took:?}");
    assert!(r.stdout.contains("built"), "{}", r.stdout);
    assert!(r.stderr.contains("computing it here"), "{}", r.stderr);
}

/// A loopback server answering every request with a 500 whose text carries terminal
/// escape sequences.
fn hostile_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().take(64).flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read(&mut buf);
            let body = "\x1b]0;pwned\x07\x1b[2Jgone";
            let _ = write!(
                s,
                "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn server_text_is_escaped_and_cleartext_credentials_warn() {
    let dir = scratch("hostile");
    let port = hostile_server();
    let m = machine(
        &dir,
        "a",
        &format!("remote = \"http://lab:s3cret-pw@127.0.0.1:{port}/dav\""),
    );
    let r = m.run(&["pipeline", "run"]);
    r.ok();
    let all = r.stdout.clone() + &r.stderr;
    // lm4ve's own log colours are escapes too: look for the server's.
    assert!(
        !all.contains("\x1b]0;") && !all.contains("\x1b[2J"),
        "the server's escape sequences were printed raw: {all:?}"
    );
    assert!(all.contains("pwned"), "{all}");
    assert!(!all.contains("s3cret-pw"), "{all}");
    assert!(r.stderr.contains("clear text"), "{}", r.stderr);
}

// ---- 5. consistent hashes, inconsistent records --------------------------------------------

#[test]
fn a_manifest_pointing_train_shards_at_the_test_shard_is_refused() {
    let dir = scratch("swap");
    let (remote, _a, key) = pushed(&dir);
    let want = reference_manifest(&dir);
    let mpath = remote.join("artifacts").join(&key).join("manifest.json");
    let good = std::fs::read(&mpath).unwrap();
    let mut m = json(&mpath);
    let test = m["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["split"] == "test")
        .unwrap()
        .clone();
    for s in m["shards"].as_array_mut().unwrap() {
        if s["split"] == "train" {
            for k in ["blake3", "bytes", "path"] {
                s[k] = test[k].clone();
            }
        }
    }
    write_json(&mpath, &m);
    let b = machine(&dir, "b", &format!("remote = \"{}\"", remote.display()));
    let r = b.run(&["pipeline", "run"]);
    r.ok();
    assert!(r.stderr.contains("not valid"), "{}", r.stderr);
    assert!(r.stdout.contains("built"), "{}", r.stdout);
    assert_eq!(manifest_hash(&b.cfg), want);
    // Meta sets model sizes downstream: an edited class count is refused too.
    let mut m: serde_json::Value = serde_json::from_slice(&good).unwrap();
    m["meta"]["num_classes"] = 1000.into();
    write_json(&mpath, &m);
    let c = machine(&dir, "c", &format!("remote = \"{}\"", remote.display()));
    let r = c.run(&["pipeline", "run"]);
    r.ok();
    assert!(r.stderr.contains("meta"), "{}", r.stderr);
    assert_eq!(manifest_hash(&c.cfg), want);
    // The untouched manifest is pulled, and the pull re-derives the same bytes.
    std::fs::write(&mpath, &good).unwrap();
    let d = machine(&dir, "d", &format!("remote = \"{}\"", remote.display()));
    let r = d.run(&["pipeline", "run"]);
    assert!(r.ok().stdout.contains("pulled"), "{}", r.stdout);
    assert_eq!(manifest_hash(&d.cfg), want);
    d.run(&["cache", "verify"]).ok();
}

// ---- 6. local records naming files outside the cache ----------------------------------------

#[test]
fn a_local_unit_record_naming_a_file_outside_the_cache_is_ignored() {
    let dir = scratch("escape");
    let remote = dir.join("shared");
    let a = machine(&dir, "a", &format!("remote = \"{}\"", remote.display()));
    a.run(&["pipeline", "run"]).ok();
    let key = a.key();
    std::fs::write(dir.join("secret.txt"), "the lab's private key").unwrap();
    let art = a.cache.join("artifacts").join(&key);
    std::fs::remove_file(art.join("manifest.json")).unwrap();
    let unit = art.join("units/train-00000.json");
    let mut rec = json(&unit);
    rec["shards"][0]["blake3"] = "../../../secret.txt".into();
    std::fs::write(&unit, serde_json::to_vec(&rec).unwrap()).unwrap();
    let r = a.run(&["cache", "push"]);
    r.ok();
    assert!(
        r.stderr.contains("ignoring the unit record"),
        "{}",
        r.stderr
    );
    for f in files_under(&remote) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("private key"),
            "{} holds the secret",
            f.display()
        );
    }
    let r = a.run(&["pipeline", "run"]);
    r.ok();
    let text = std::fs::read_to_string(art.join("manifest.json")).unwrap();
    assert!(!text.contains("secret"), "{text}");
    a.run(&["cache", "verify"]).ok();
}

// ---- 7. gc can race a running stage ---------------------------------------------------------

fn age(p: &Path, secs: u64) {
    std::fs::File::options()
        .append(true)
        .open(p)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

fn oldest_age(dir: &Path) -> Duration {
    files_under(dir)
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .unwrap()
                .modified()
                .unwrap()
                .elapsed()
                .unwrap_or_default()
        })
        .max()
        .unwrap()
}

#[test]
fn put_and_push_refresh_the_mtime_of_objects_they_reuse() {
    let dir = scratch("mtime");
    let (remote, a, key) = pushed(&dir);
    // Local: objects written two days ago, reused by a new run of the same units.
    for f in files_under(&a.cache.join("objects")) {
        age(&f, 2 * 86_400);
    }
    std::fs::remove_dir_all(a.cache.join("artifacts").join(&key)).unwrap();
    a.run(&["--remote", "none", "pipeline", "run"]).ok();
    let oldest = oldest_age(&a.cache.join("objects"));
    assert!(
        oldest < Duration::from_secs(600),
        "put left an old mtime: {oldest:?}"
    );
    // Remote: records gone (another artifact's gc), objects old; a push skips them but
    // must make them young, or a remote gc right now would delete what the push names.
    std::fs::remove_dir_all(remote.join("artifacts").join(&key)).unwrap();
    for f in files_under(&remote.join("objects")) {
        age(&f, 2 * 86_400);
    }
    let r = a.run(&["cache", "push"]);
    assert!(r.ok().stdout.contains("0 objects"), "{}", r.stdout);
    let oldest = oldest_age(&remote.join("objects"));
    assert!(
        oldest < Duration::from_secs(600),
        "push left an old mtime: {oldest:?}"
    );
    let r = a.run_env(
        &[("LM4VE_REMOTE_GC_GRACE_SECS", "3600")],
        &["cache", "gc", "--remote"],
    );
    assert!(r.ok().stdout.contains("0 objects"), "{}", r.stdout);
    a.run(&["cache", "verify", "--remote"]).ok();
}

// ---- 8. scripts/read_shards.py --------------------------------------------------------------

fn python(args: &[&str]) -> Run {
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/read_shards.py");
    output(
        std::process::Command::new(py)
            .arg(script)
            .args(args)
            .output()
            .expect("python3"),
    )
}

#[test]
fn read_shards_py_checks_paths_sizes_and_hashes() {
    let dir = scratch("py");
    let a = machine(&dir, "a", "");
    a.run(&["pipeline", "run"]).ok();
    let v = show_json(&a.cfg);
    let manifest = PathBuf::from(v["manifest"].as_str().unwrap());
    let ms = manifest.display().to_string();
    let r = python(&["--verify", &ms]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("verified_objects"), "{}", r.stdout);
    let m = json(&manifest);
    // A path out of the cache.
    let mut bad = m.clone();
    bad["shards"][0]["path"] = "../../../../../../etc/passwd".into();
    let p = dir.join("escape.json");
    write_json(&p, &bad);
    let r = python(&[&p.display().to_string()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("bad object reference"), "{}", r.stderr);
    // A flipped byte in an object: --verify names it.
    let h = m["shards"][0]["blake3"].as_str().unwrap();
    let obj = a.cache.join("objects").join(&h[..2]).join(h);
    let mut bytes = std::fs::read(&obj).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&obj, bytes).unwrap();
    let r = python(&["--verify", &ms]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("do not hash"), "{}", r.stderr);
    // The 123-byte shard: refused, no MemoryError or hang.
    let lie = lying_shard();
    let h2 = store(&a.cache, &lie);
    let mut m2 = m.clone();
    m2["shards"][0]["blake3"] = h2.clone().into();
    m2["shards"][0]["bytes"] = lie.len().into();
    m2["shards"][0]["path"] = format!("../../objects/{}/{h2}", &h2[..2]).into();
    write_json(&manifest, &m2);
    let r = python(&[&ms]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("offset index"), "{}", r.stderr);
}

// ---- 9. artifacts are a pure function of their key ----------------------------------------

fn train_config(dir: &Path, name: &str, model: &Path) -> PathBuf {
    let (train, test) = demo();
    let text = format!(
        r#"[cache]
dir = "cache-{name}"

[stages.pc_tokens]
kind = "pc.tokens"
[stages.pc_tokens.params]
format = "h5"
train = "{}"
test = "{}"
num_points = 128
num_groups = 16
group_size = 8
shard_samples = 64

[stages.llm_block]
kind = "llm.block"
[stages.llm_block.params]
checkpoint = "{}"

[stages.train_pc]
kind = "train"
[stages.train_pc.params]
data = "pc_tokens"
block = "llm_block"
epochs = 3
warmup_epochs = 1
batch_size = 16
lr = 2e-3
epochs_per_checkpoint = 2
[stages.train_pc.params.model]
trans_dim = 32
depth = 1
heads = 2
pointnet_dims = [16, 32, 32]
encoder_dims = 32
drop_path = 0.0
head_dropout = 0.0
"#,
        train.display(),
        test.display(),
        model.display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Every file of the artifacts and objects of a cache, by path under it, with its bytes'
/// hash (run records and locks are per machine and per run: not compared).
fn artifact_bytes(cache: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = ["artifacts", "objects"]
        .iter()
        .flat_map(|sub| files_under(&cache.join(sub)))
        .map(|f| {
            (
                f.strip_prefix(cache).unwrap().display().to_string(),
                blake3::hash(&std::fs::read(&f).unwrap())
                    .to_hex()
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_training_stage_run_in_two_caches_gives_identical_bytes() {
    let dir = scratch("pure");
    let model = tiny_llama(&dir);
    let one = train_config(&dir, "one", &model);
    let two = train_config(&dir, "two", &model);
    // Different thread counts too: -j is not part of the key (key.rs).
    lm4ve(
        &one,
        &[
            "-j", "1", "--device", "cpu", "pipeline", "run", "--stage", "train_pc",
        ],
    )
    .ok();
    lm4ve(
        &two,
        &[
            "-j", "2", "--device", "cpu", "pipeline", "run", "--stage", "train_pc",
        ],
    )
    .ok();
    let a = artifact_bytes(&dir.join("cache-one"));
    let b = artifact_bytes(&dir.join("cache-two"));
    assert!(a.iter().any(|(p, _)| p.ends_with("manifest.json")));
    let differ: Vec<&(String, String)> = a.iter().filter(|x| !b.contains(x)).collect();
    assert!(differ.is_empty(), "same key, different bytes: {differ:?}");
    assert_eq!(a.len(), b.len());
    // The manifest (one checkpoint.safetensors per unit) passes the record checks.
    lm4ve(&one, &["pipeline", "show", "train_pc", "--json"]).ok();
    // No wall-clock time in the training artifact's records.
    for (p, _) in &a {
        if p.ends_with(".json") {
            let text = std::fs::read_to_string(dir.join("cache-one").join(p)).unwrap();
            assert!(!text.contains("seconds"), "{p}: {text}");
        }
    }
}
