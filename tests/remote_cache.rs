//! The team cache end to end, through the real binary and real servers on loopback: a
//! directory remote, moto's standalone S3 server (PyPI `moto[server]`) and nginx with its
//! WebDAV modules (Debian `nginx libnginx-mod-http-dav-ext`), each started and stopped by
//! the tests. Two cache directories stand for two machines.
//!
//! `make test` installs both servers. Without them a test says so loudly and passes — unless
//! `CI` is set, where a server that cannot start is a failure.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// ---- servers ------------------------------------------------------------------------------

/// A server process that dies with the test process: its stdin is a pipe from us, and a
/// watchdog in the child exits when that pipe closes (also on a panic or abort).
struct Server {
    child: Child,
    port: u16,
    root: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_port(port: u16, child: &mut Child, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A server is missing: fail under CI (make test installs it), else skip loudly.
fn unavailable(what: &str, why: &str) {
    let msg = format!(
        "{what} cannot be started here ({why}); install it with `make pydeps deps` (moto[server] from PyPI, nginx libnginx-mod-http-dav-ext from Debian)"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("remote-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// moto's S3 server, shared by the tests of this file (each uses its own bucket).
fn moto() -> Option<&'static Server> {
    static MOTO: OnceLock<Result<Server, String>> = OnceLock::new();
    let r = MOTO.get_or_init(|| {
        let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let port = free_port();
        let root = scratch("moto");
        let script = format!(
            "import os, sys, threading\n\
             threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()\n\
             from moto.server import main\n\
             main(['-H', '127.0.0.1', '-p', '{port}'])\n"
        );
        let log = std::fs::File::create(root.join("moto.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new(&py)
            .args(["-c", &script])
            // Lets the multipart test use small parts (S3's own minimum is 5 MiB).
            .env("S3_UPLOAD_PART_MIN_SIZE", "1024")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{py}: {e}"))?;
        if !wait_port(port, &mut child, Duration::from_secs(60)) {
            let _ = child.kill();
            let log = std::fs::read_to_string(root.join("moto.log")).unwrap_or_default();
            return Err(format!("`{py} -m moto.server` did not start: {}", log.lines().last().unwrap_or("")));
        }
        Ok(Server { child, port, root })
    });
    match r {
        Ok(s) => Some(s),
        Err(e) => {
            unavailable("moto's S3 server", e);
            None
        }
    }
}

/// A bucket on moto (plain HTTP PUT: moto does not check signatures).
fn bucket(s: &Server, name: &str) {
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(
        c,
        "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        s.port
    )
    .unwrap();
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "creating bucket {name}: {resp}"
    );
}

fn s3_env(s: &Server) -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        (
            "AWS_ENDPOINT_URL".into(),
            format!("http://127.0.0.1:{}", s.port),
        ),
    ]
}

/// nginx serving `root/` with WebDAV (PUT, DELETE, MKCOL, PROPFIND) under `/dav/`, behind
/// Basic authentication (user `lab`, password `dav-s3cret`).
fn nginx(name: &str) -> Option<Server> {
    let bin = [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    let Some(bin) = bin else {
        unavailable("nginx", "no nginx binary");
        return None;
    };
    let module = [
        "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so",
        "/usr/lib64/nginx/modules/ngx_http_dav_ext_module.so",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    let Some(module) = module else {
        unavailable(
            "nginx",
            "no ngx_http_dav_ext_module (Debian: libnginx-mod-http-dav-ext)",
        );
        return None;
    };
    let port = free_port();
    let root = scratch(&format!("nginx-{name}"));
    std::fs::create_dir_all(root.join("www/dav")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let d = root.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         load_module {module};\nevents {{}}\nhttp {{\n  access_log off;\n\
         client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n\
         uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
         server {{\n    listen 127.0.0.1:{port};\n    root {d}/www;\n    client_max_body_size 0;\n\
         location /dav/ {{\n      dav_methods PUT DELETE MKCOL COPY MOVE;\n\
         dav_ext_methods PROPFIND OPTIONS;\n      create_full_put_path on;\n\
         auth_basic lm4ve;\n      auth_basic_user_file {d}/htpasswd;\n    }}\n  }}\n}}\n"
    );
    std::fs::write(root.join("nginx.conf"), conf).unwrap();
    // Basic authentication: the tests put `lab:dav-s3cret` in the remote's URL.
    std::fs::write(root.join("htpasswd"), "lab:{PLAIN}dav-s3cret\n").unwrap();
    let script = format!(
        "'{}' -e '{d}/error.log' -p '{d}' -c '{d}/nginx.conf' & p=$!; cat >/dev/null; kill $p; wait $p",
        bin.display()
    );
    let mut child = match Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            unavailable("nginx", &e.to_string());
            return None;
        }
    };
    if !wait_port(port, &mut child, Duration::from_secs(20)) {
        let log = std::fs::read_to_string(root.join("error.log")).unwrap_or_default();
        unavailable(
            "nginx",
            &format!("it did not start: {}", log.lines().last().unwrap_or("")),
        );
        return None;
    }
    Some(Server { child, port, root })
}

// ---- machines ---------------------------------------------------------------------------

/// The demo point clouds, written once per test process.
fn demo() -> &'static (PathBuf, PathBuf) {
    static DEMO: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DEMO.get_or_init(|| {
        let d = scratch("demo");
        let so = demo_data(&d, 4);
        (
            so.join("training_objectdataset.h5"),
            so.join("test_objectdataset.h5"),
        )
    })
}

/// One "machine": its own config and cache directory under `dir`.
struct Machine {
    cfg: PathBuf,
    cache: PathBuf,
    env: Vec<(String, String)>,
}

fn machine(dir: &Path, name: &str, cache_extra: &str, env: &[(String, String)]) -> Machine {
    let (train, test) = demo();
    let cfg = pc_config(dir, &format!("{name}.toml"), train, test, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "dir = \"cache\"",
        &format!("dir = \"cache-{name}\"\n{cache_extra}"),
    );
    std::fs::write(&cfg, text).unwrap();
    Machine {
        cfg,
        cache: dir.join(format!("cache-{name}")),
        env: env.to_vec(),
    }
}

impl Machine {
    fn run(&self, args: &[&str]) -> Run {
        self.run_env(&[], args)
    }

    fn run_env(&self, env: &[(&str, &str)], args: &[&str]) -> Run {
        let mut c = bin();
        c.env_remove("LM4VE_REMOTE")
            .env_remove("LM4VE_FAULT_ABORT_AFTER_UPLOADS")
            .env_remove("LM4VE_MULTIPART_BYTES");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        c.arg("-c").arg(&self.cfg).args(args);
        output(c.output().expect("spawn lm4ve"))
    }

    fn manifest_hash(&self) -> String {
        manifest_hash(&self.cfg)
    }

    /// (path under the cache, blake3) of every object and manifest.
    fn artifact_files(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for sub in ["objects", "artifacts"] {
            for e in walk(&self.cache.join(sub)) {
                let rel = e.strip_prefix(&self.cache).unwrap().display().to_string();
                if rel.contains("/units/") {
                    continue;
                }
                out.push((rel, hash_file(&e)));
            }
        }
        out.sort();
        out
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn hash_file(p: &Path) -> String {
    blake3::hash(&std::fs::read(p).unwrap())
        .to_hex()
        .to_string()
}

/// What a single machine with no remote builds: the reference artifact.
fn reference(dir: &Path) -> String {
    let m = machine(dir, "reference", "", &[]);
    m.run(&["pipeline", "run"]).ok();
    m.manifest_hash()
}

fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{what} leaks `{s}`:\n{text}");
    }
}

// ---- tests ------------------------------------------------------------------------------

#[test]
fn directory_remote_machine_b_pulls_what_a_computed_byte_identical() {
    let dir = scratch("dir-pull");
    let remote = dir.join("shared");
    let extra = format!("remote = \"{}\"\npush = true", remote.display());
    let a = machine(&dir, "a", &extra, &[]);
    let b = machine(&dir, "b", &extra, &[]);
    let r = a.run(&["pipeline", "run"]);
    assert!(
        r.ok().stdout.contains("pushed to the directory remote"),
        "{}",
        r.stdout
    );
    assert!(remote.join("objects").is_dir() && remote.join("artifacts").is_dir());
    let st = b.run(&["pipeline", "status"]);
    assert!(
        st.ok().stdout.contains("on the directory remote"),
        "{}",
        st.stdout
    );
    let r = b.run(&["pipeline", "run"]);
    assert!(r.ok().stdout.contains("pulled"), "{}", r.stdout);
    assert!(r.stdout.contains("0 stages run, 1 pulled"), "{}", r.stdout);
    assert_eq!(
        a.artifact_files(),
        b.artifact_files(),
        "B's pulled artifact differs from A's"
    );
    b.run(&["cache", "verify"]).ok();
    // Everything local now: the next run does not look at the remote at all.
    let r = b.run(&["pipeline", "run"]);
    assert!(r.ok().stdout.contains("nothing to do"), "{}", r.stdout);
    // The remote's location is in no record and no output.
    let secret = remote.display().to_string();
    for m in [&a, &b] {
        for f in walk(&m.cache.join("runs")) {
            assert_no_secret(
                "a run record",
                &std::fs::read_to_string(&f).unwrap(),
                &[&secret],
            );
        }
    }
    assert_no_secret("output", &(r.stdout.clone() + &r.stderr), &[&secret]);
    // --remote none: B's config remote is ignored; a third machine computes alone.
    let c = machine(&dir, "c", &extra, &[]);
    let r = c.run(&["--remote", "none", "pipeline", "run"]);
    assert!(r.ok().stdout.contains("built"), "{}", r.stdout);
    assert!(!r.stdout.contains("pushed"), "{}", r.stdout);
}

#[test]
fn unreachable_remote_warns_and_computes_without_leaking_its_url() {
    let dir = scratch("unreachable");
    let port = free_port(); // nothing listens there
    let url = format!("http://alice:s3cret-pw@127.0.0.1:{port}/dav/team");
    let a = machine(&dir, "a", "push = true", &[]);
    let r = a.run_env(&[("LM4VE_REMOTE", &url)], &["pipeline", "run"]);
    r.ok();
    assert!(r.stdout.contains("built"), "{}", r.stdout);
    assert!(r.stderr.contains("http remote"), "{}", r.stderr);
    let leaks = [
        "s3cret-pw",
        "alice",
        &format!("127.0.0.1:{port}"),
        "/dav/team",
    ];
    assert_no_secret("stdout+stderr", &(r.stdout.clone() + &r.stderr), &leaks);
    for f in walk(&a.cache) {
        if let Ok(text) = std::fs::read_to_string(&f) {
            assert_no_secret(&f.display().to_string(), &text, &leaks);
        }
    }
    // --help shows the variable's name, never its value.
    let mut c = bin();
    c.env("LM4VE_REMOTE", &url).arg("--help");
    let h = output(c.output().unwrap());
    assert_no_secret("--help", &h.stdout, &leaks);
    // A URL that is not one is a usage error (exit 2).
    let r = a.run(&["--remote", "ftp://x/y", "pipeline", "run"]);
    assert_eq!(r.no_panic().code, 2, "{}", r.stderr);
}

#[test]
fn s3_parts_on_two_machines_assemble_the_single_machine_artifact() {
    let Some(s3) = moto() else { return };
    bucket(s3, "parts");
    let dir = scratch("s3-parts");
    let want = reference(&dir);
    let extra = "remote = \"s3://parts/lab/lm4ve\"";
    let env = s3_env(s3);
    let a = machine(&dir, "a", extra, &env);
    let b = machine(&dir, "b", extra, &env);
    let r = a.run(&["pipeline", "run", "--stage", "pc_tokens", "--part", "0/2"]);
    assert!(
        r.ok().stdout.contains("pushed to the s3 remote"),
        "{}",
        r.stdout
    );
    // Before part 1 ran: a strict assembly names what is missing.
    let d = machine(&dir, "d", extra, &env);
    let r = d.run(&["pipeline", "run", "--assemble"]);
    assert_eq!(r.no_panic().code, 1, "{}", r.stdout);
    assert!(
        r.stderr.contains("cannot assemble") && r.stderr.contains("not finished"),
        "{}",
        r.stderr
    );
    let r = b.run(&["pipeline", "run", "--stage", "pc_tokens", "--part", "1/2"]);
    assert!(
        r.ok().stdout.contains("pushed to the s3 remote"),
        "{}",
        r.stdout
    );
    // B assembles from its own units and A's (pulled), computing nothing.
    let r = b.run(&["pipeline", "run", "--push"]);
    assert!(r.ok().stdout.contains("built"), "{}", r.stdout);
    assert!(
        r.stdout.contains("0 units run") && r.stdout.contains("pulled from the s3 remote"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("manifest (complete)"), "{}", r.stdout);
    assert_eq!(b.manifest_hash(), want);
    // A third machine pulls the finished artifact; same bytes, and it verifies.
    let c = machine(&dir, "c", extra, &env);
    let r = c.run(&["cache", "pull"]);
    assert!(r.ok().stdout.contains("pulled"), "{}", r.stdout);
    assert_eq!(c.manifest_hash(), want);
    assert_eq!(b.artifact_files(), c.artifact_files());
    let r = c.run(&["cache", "verify", "--remote"]);
    assert!(
        r.ok().stdout.contains("0 corrupt, 0 missing"),
        "{}",
        r.stdout
    );
    // And the strict assembly now succeeds on D.
    let r = d.run(&["pipeline", "run", "--assemble"]);
    r.ok();
    assert_eq!(d.manifest_hash(), want);
}

#[test]
fn s3_push_killed_midway_leaves_a_consistent_remote_and_the_next_push_completes_it() {
    let Some(s3) = moto() else { return };
    bucket(s3, "killed");
    let dir = scratch("s3-killed");
    let env = s3_env(s3);
    let extra = "remote = \"s3://killed/x\"";
    let a = machine(&dir, "a", extra, &env);
    a.run(&["--remote", "none", "pipeline", "run"]).ok();
    // Small multipart parts, and a crash (abort: no cleanup) after the 4th upload.
    let crash = [
        ("LM4VE_MULTIPART_BYTES", "4096"),
        ("LM4VE_FAULT_ABORT_AFTER_UPLOADS", "4"),
    ];
    let r = a.run_env(&crash, &["cache", "push"]);
    assert_ne!(r.code, 0, "the push was to be killed: {}", r.stdout);
    assert!(r.stderr.contains("fault injection"), "{}", r.stderr);
    // Consistent: no manifest, no record naming a missing object (verify checks both).
    let b = machine(&dir, "b", extra, &env);
    let st = b.run(&["pipeline", "status"]);
    assert!(st.ok().stdout.contains("never built"), "{}", st.stdout);
    let r = b.run(&["cache", "verify", "--remote"]);
    assert!(
        r.ok()
            .stdout
            .contains("0 corrupt, 0 missing, 0 bad records"),
        "{}",
        r.stdout
    );
    // The next push resumes the interrupted multipart uploads and completes the artifact.
    let r = a.run_env(&[("LM4VE_MULTIPART_BYTES", "4096")], &["cache", "push"]);
    assert!(
        r.ok().stdout.contains("manifest (complete)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("interrupted uploads resumed"),
        "{}",
        r.stdout
    );
    let r = b.run(&["pipeline", "run"]);
    assert!(r.ok().stdout.contains("pulled"), "{}", r.stdout);
    assert_eq!(a.artifact_files(), b.artifact_files());
    // A second push has nothing to do.
    let r = a.run(&["cache", "push"]);
    assert!(
        r.ok().stdout.contains("already on the s3 remote"),
        "{}",
        r.stdout
    );
}

#[test]
fn webdav_remote_catches_a_corrupted_object_recomputes_and_repairs_it() {
    let Some(dav) = nginx("corrupt") else { return };
    let dir = scratch("dav-corrupt");
    let want = reference(&dir);
    // Credentials in the URL (nginx checks them): they must never show up anywhere.
    let url = format!("http://lab:dav-s3cret@127.0.0.1:{}/dav/lm4ve", dav.port);
    let wrong = url.replace("dav-s3cret", "wrong-pw");
    let r = machine(&dir, "w", "", &[]).run(&["--remote", &wrong, "cache", "verify", "--remote"]);
    assert_ne!(r.no_panic().code, 0);
    assert!(r.stderr.contains("401"), "{}", r.stderr);
    assert_no_secret("output", &(r.stdout + &r.stderr), &["wrong-pw"]);
    let env = vec![("LM4VE_REMOTE".to_string(), url.clone())];
    let a = machine(&dir, "a", "push = true", &env);
    let r = a.run(&["pipeline", "run"]);
    assert!(
        r.ok().stdout.contains("pushed to the http remote"),
        "{}",
        r.stdout
    );
    // Flip a byte of one object on the server's disk.
    let objects = walk(&dav.root.join("www/dav/lm4ve/objects"));
    assert!(!objects.is_empty());
    let victim = &objects[0];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(victim, &bytes).unwrap();
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    let r = a.run(&["cache", "verify", "--remote"]);
    assert_eq!(r.no_panic().code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("CORRUPT") && r.stdout.contains(&name),
        "{}",
        r.stdout
    );
    // B refuses the object, says so, recomputes that unit, and pushes the good bytes back.
    let b = machine(&dir, "b", "push = true", &env);
    let r = b.run(&["pipeline", "run"]);
    r.ok();
    assert!(
        r.stderr.contains("corrupt") && r.stderr.contains(&name[..12]),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("built") && r.stdout.contains("1 units run"),
        "{}",
        r.stdout
    );
    assert_eq!(b.manifest_hash(), want);
    assert_eq!(hash_file(victim), name, "the remote copy was not repaired");
    let r = b.run(&["cache", "verify", "--remote"]);
    assert!(
        r.ok().stdout.contains("0 corrupt, 0 missing"),
        "{}",
        r.stdout
    );
    let c = machine(&dir, "c", "", &env);
    c.run(&["pipeline", "run"]).ok();
    assert_eq!(c.manifest_hash(), want);
    // Never printed, never recorded.
    let leaks = ["dav-s3cret", "lab:"];
    for m in [&a, &b, &c] {
        for f in walk(&m.cache) {
            if let Ok(text) = std::fs::read_to_string(&f) {
                assert_no_secret(&f.display().to_string(), &text, &leaks);
            }
        }
    }
    assert_no_secret("output", &(r.stdout + &r.stderr), &leaks);
}

#[test]
fn two_machines_pushing_the_same_key_at_once_is_harmless() {
    let dir = scratch("race");
    let remote = dir.join("shared");
    let extra = format!("remote = \"{}\"\npush = true", remote.display());
    let a = machine(&dir, "a", &extra, &[]);
    let b = machine(&dir, "b", &extra, &[]);
    let spawn = |m: &Machine| {
        let mut c = bin();
        c.env_remove("LM4VE_REMOTE")
            .args(["-c"])
            .arg(&m.cfg)
            .args(["--remote", "none", "pipeline", "run"]);
        c.output().unwrap()
    };
    // Both compute at once (no remote), then both push at once.
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| spawn(&a));
        let hb = s.spawn(|| spawn(&b));
        (output(ha.join().unwrap()), output(hb.join().unwrap()))
    });
    ra.ok();
    rb.ok();
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| a.run(&["cache", "push", "--force"]));
        let hb = s.spawn(|| b.run(&["cache", "push", "--force"]));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    ra.ok();
    rb.ok();
    a.run(&["cache", "verify", "--remote"]).ok();
    let c = machine(&dir, "c", &extra, &[]);
    let r = c.run(&["pipeline", "run"]);
    assert!(r.ok().stdout.contains("pulled"), "{}", r.stdout);
    assert_eq!(a.artifact_files(), c.artifact_files());
}

#[test]
fn remote_gc_keeps_current_and_recent_artifacts_and_drops_the_rest() {
    let dir = scratch("gc");
    let remote = dir.join("shared");
    let extra = format!("remote = \"{}\"\npush = true", remote.display());
    let a = machine(&dir, "a", &extra, &[]);
    a.run(&["pipeline", "run"]).ok();
    let old_objects = walk(&remote.join("objects")).len();
    // A param edit: a second artifact; the first is no longer the config's.
    let text = std::fs::read_to_string(&a.cfg).unwrap();
    std::fs::write(&a.cfg, text.replace("num_groups = 16", "num_groups = 8")).unwrap();
    a.run(&["pipeline", "run"]).ok();
    let arts = || std::fs::read_dir(remote.join("artifacts")).unwrap().count();
    assert_eq!(arts(), 2);
    let now = [("LM4VE_REMOTE_GC_GRACE_SECS", "0")];
    // Recent runs are kept with --keep-days.
    let r = a.run_env(&now, &["cache", "gc", "--remote", "--keep-days", "1"]);
    assert!(
        r.ok().stdout.contains("0 artifacts removed, 2 kept"),
        "{}",
        r.stdout
    );
    // Within the default grace period nothing young goes either.
    let r = a.run(&["cache", "gc", "--remote"]);
    assert!(
        r.ok().stdout.contains("0 artifacts removed"),
        "{}",
        r.stdout
    );
    let r = a.run_env(&now, &["cache", "gc", "--remote", "--dry-run"]);
    assert!(
        r.ok().stdout.contains("1 artifacts removed"),
        "{}",
        r.stdout
    );
    assert_eq!(arts(), 2);
    let r = a.run_env(&now, &["cache", "gc", "--remote"]);
    assert!(
        r.ok().stdout.contains("1 artifacts removed, 1 kept"),
        "{}",
        r.stdout
    );
    assert_eq!(arts(), 1);
    assert!(walk(&remote.join("objects")).len() < old_objects * 2);
    a.run(&["cache", "verify", "--remote"]).ok();
    // The kept artifact still pulls.
    let b = machine(&dir, "b", &extra, &[]);
    std::fs::write(
        &b.cfg,
        std::fs::read_to_string(&a.cfg)
            .unwrap()
            .replace("cache-a", "cache-b"),
    )
    .unwrap();
    let r = b.run(&["pipeline", "run"]);
    assert!(r.ok().stdout.contains("pulled"), "{}", r.stdout);
}
