//! HTTPS for visitors end to end: the real binary with `[[tls]]` listeners
//! on ephemeral loopback ports, certificates made at test time (a test CA
//! and leaves signed by it, `rcgen`; no key is committed), real clients
//! (curl, which verifies the chain against the test CA, and testssl.sh) and
//! real nodes (Apache httpd, demo nodes).

mod support;

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::demo::DemoNodes;
use support::webcluster::{base_config, binary, group_config, node, Webcluster};
use support::{free_port, http_get, ApacheNode, ApacheOpts};

/// A certificate authority for one test: leaves it signs verify against
/// `ca.pem` (given to curl with `--cacert`).
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: tempfile::TempDir,
}

impl Ca {
    fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "webcluster test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).expect("write the CA");
        Ca { issuer, dir }
    }

    fn pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A leaf for `names` with common name `cn`, valid from `days.0` to
    /// `days.1` days from now, written as `<file>.pem` (the leaf, then the
    /// CA) and `<file>.key`; their paths.
    fn issue(&self, file: &str, cn: &str, names: &[&str], days: (i64, i64)) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(days.0);
        params.not_after = now + time::Duration::days(days.1);
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        let chain = self.dir.path().join(format!("{file}.pem"));
        let key_path = self.dir.path().join(format!("{file}.key"));
        std::fs::write(&chain, cert.pem() + &self.issuer.pem()).expect("write the chain");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
        (chain, key_path)
    }
}

/// A `[[tls]]` listener on `port` with these (chain, key) files and extra
/// keys.
fn tls_config(port: u16, certificates: &[&(PathBuf, PathBuf)], extra: &str) -> String {
    let list: Vec<String> = certificates
        .iter()
        .map(|(c, k)| {
            format!(
                "{{ chain = \"{}\", key = \"{}\" }}",
                c.display(),
                k.display()
            )
        })
        .collect();
    format!(
        "[[tls]]\nlisten = [\"127.0.0.1:{port}\"]\ncertificates = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// webcluster with a TLS listener (whose address is returned) made by
/// `make(plain listener, admin, TLS port)`.
fn start(make: impl Fn(SocketAddr, SocketAddr, u16) -> String) -> (Webcluster, SocketAddr) {
    let port = Cell::new(0);
    let wc = Webcluster::start(|l, a| {
        port.set(free_port());
        make(l, a, port.get())
    });
    (wc, SocketAddr::from(([127, 0, 0, 1], port.get())))
}

/// What one curl run printed, and whether it succeeded.
struct Curl {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Curl {
    /// The served certificate's subject, as `curl -v` prints it.
    fn subject(&self) -> Option<&str> {
        self.stderr
            .lines()
            .find_map(|l| l.trim_start_matches('*').trim().strip_prefix("subject: "))
    }
}

/// curl, verifying the server against `ca`, bounded to 20 s.
fn curl(ca: &Path, args: &[&str]) -> Curl {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(args)
        .output()
        .expect("run curl (Debian package curl)");
    Curl {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `--resolve` making `name` lead to `addr`, and the URL of `path` there.
fn at(name: &str, addr: SocketAddr, path: &str) -> (String, String) {
    (
        format!("{name}:{}:127.0.0.1", addr.port()),
        format!("https://{name}:{}{path}", addr.port()),
    )
}

#[test]
fn https_reaches_a_real_apache_node_which_is_told_https() {
    let apache = ApacheNode::start(ApacheOpts::prefork("a", 4));
    let ca = Ca::new();
    let cert = ca.issue("site", "www.example.test", &["www.example.test"], (-1, 90));
    let (wc, https) = start(|l, a, port| {
        base_config(l, a, "")
            + &tls_config(port, &[&cert], "")
            + &group_config("web", "", &[("a", apache.addr(), "")])
    });
    let (resolve, url) = at("www.example.test", https, "/headers");
    let r = curl(
        &ca.pem_path(),
        &["--http1.1", "-v", "--resolve", &resolve, &url],
    );
    assert!(r.ok, "curl over TLS failed: {}", r.stderr);
    assert_eq!(r.subject(), Some("CN=www.example.test"), "{}", r.stderr);
    let echoed = |body: &str, name: &str| {
        body.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    assert_eq!(
        echoed(&r.stdout, "x-forwarded-proto").as_deref(),
        Some("https"),
        "{}",
        r.stdout
    );
    let port = https.port().to_string();
    assert_eq!(
        echoed(&r.stdout, "x-forwarded-port").as_deref(),
        Some(port.as_str()),
        "{}",
        r.stdout
    );
    assert_eq!(
        echoed(&r.stdout, "host").as_deref(),
        Some(format!("www.example.test:{port}").as_str())
    );
    // Over HTTP/2 (ALPN h2): the same request path, the same headers.
    let r2 = curl(
        &ca.pem_path(),
        &["--http2", "-v", "--resolve", &resolve, &url],
    );
    assert!(r2.ok, "curl --http2 over TLS failed: {}", r2.stderr);
    assert!(r2.stderr.contains("< HTTP/2 200"), "{}", r2.stderr);
    assert_eq!(
        echoed(&r2.stdout, "x-forwarded-proto").as_deref(),
        Some("https"),
        "{}",
        r2.stdout
    );
    assert_eq!(
        echoed(&r2.stdout, "host").as_deref(),
        Some(format!("www.example.test:{port}").as_str())
    );
    // The same node through the plain listener: http, and its port.
    let plain = http_get(wc.listen, "/headers", &[("X-Forwarded-Proto", "https")]).expect("GET");
    assert_eq!(
        plain.echoed("x-forwarded-proto"),
        Some("http"),
        "{}",
        plain.body
    );
    let plain_port = wc.listen.port().to_string();
    assert_eq!(
        plain.echoed("x-forwarded-port"),
        Some(plain_port.as_str()),
        "{}",
        plain.body
    );
    // The node's own log has the request that came over TLS.
    assert!(
        apache.access_log().contains("GET /headers"),
        "{}",
        apache.access_log()
    );
    // Handshakes are counted (the HTTP/1.1 one and the HTTP/2 one), and
    // the certificate is on the page and in the JSON and metrics.
    let metrics = http_get(wc.admin, "/metrics", &[]).expect("metrics").body;
    assert!(
        metrics
            .contains("webcluster_tls_handshakes_total{result=\"success\",version=\"TLSv1.3\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("webcluster_tls_certificate_expiry_timestamp_seconds{"),
        "{metrics}"
    );
    let status = wc.status();
    let c = &status["tls"][0]["certificates"][0];
    assert_eq!(c["names"][0], "www.example.test", "{status:#}");
    assert_eq!(c["expiring_soon"], false, "{status:#}");
    let page = http_get(wc.admin, "/", &[]).expect("page").body;
    assert!(
        page.contains("TLS certificates") && page.contains("CN=www.example.test"),
        "{page}"
    );
}

#[test]
fn the_certificate_is_chosen_by_sni_exact_then_wildcard_then_default() {
    let nodes = DemoNodes::start(&["a"], 8, Duration::ZERO);
    let ca = Ca::new();
    let default = ca.issue("default", "default.test", &["default.test"], (-1, 90));
    let wild = ca.issue(
        "wild",
        "wildcard.example.test",
        &["*.example.test"],
        (-1, 90),
    );
    let exact = ca.issue(
        "exact",
        "shop.example.test",
        &["shop.example.test"],
        (-1, 90),
    );
    let (_wc, https) = start(|l, a, port| {
        base_config(l, a, "")
            + &tls_config(port, &[&default, &wild, &exact], "")
            + &group_config("web", "", &[("a", nodes.addr(0), "")])
    });
    let served = |name: &str| {
        let (resolve, url) = at(name, https, "/node");
        // -k: the default certificate does not name what is asked for.
        let r = curl(
            &ca.pem_path(),
            &["-k", "-v", "--http1.1", "--resolve", &resolve, &url],
        );
        assert!(r.ok, "{name}: {}", r.stderr);
        assert_eq!(r.stdout, "a");
        r.subject().map(str::to_string)
    };
    assert_eq!(
        served("shop.example.test").as_deref(),
        Some("CN=shop.example.test")
    );
    assert_eq!(
        served("www.example.test").as_deref(),
        Some("CN=wildcard.example.test")
    );
    assert_eq!(
        served("a.b.example.test").as_deref(),
        Some("CN=default.test")
    );
    assert_eq!(served("other.test").as_deref(), Some("CN=default.test"));
    // No SNI at all (an IP address): the default.
    let r = curl(
        &ca.pem_path(),
        &["-k", "-v", &format!("https://{https}/node")],
    );
    assert_eq!(r.subject(), Some("CN=default.test"), "{}", r.stderr);
}

#[test]
fn testssl_finds_nothing_high_or_critical() {
    support::require_installed("/usr/bin/testssl", "testssl.sh");
    let nodes = DemoNodes::start(&["a"], 8, Duration::ZERO);
    let ca = Ca::new();
    let cert = ca.issue("site", "localhost", &["localhost"], (-1, 90));
    let (_wc, https) = start(|l, a, port| {
        base_config(l, a, "")
            + &tls_config(port, &[&cert], "")
            + &group_config("web", "", &[("a", nodes.addr(0), "")])
    });
    let out = tempfile::tempdir().expect("temp dir");
    let json = out.path().join("testssl.json");
    // Protocols, cipher categories, forward secrecy and the known
    // vulnerabilities; bounded by `timeout`.
    let run = Command::new("timeout")
        .args([
            "600",
            "/usr/bin/testssl",
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
        ])
        .arg("--add-ca")
        .arg(ca.pem_path())
        .args(["--protocols", "--std", "--fs", "--vulnerable", "--jsonfile"])
        .arg(&json)
        .arg(format!("localhost:{}", https.port()))
        .output()
        .expect("run testssl.sh");
    let report = String::from_utf8_lossy(&run.stdout).into_owned();
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no JSON from testssl.sh ({e}): {report}"));
    let findings: Vec<serde_json::Value> = serde_json::from_str(&text).expect("testssl JSON");
    let finding = |id: &str| {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("testssl.sh did not check {id}: {report}"))
    };
    // It ran the checks asked for.
    for id in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        let f = finding(id)["finding"].as_str().unwrap_or("");
        assert!(f.contains("not offered"), "{id}: {f}");
    }
    for id in ["TLS1_2", "TLS1_3"] {
        let f = finding(id)["finding"].as_str().unwrap_or("");
        assert!(f.starts_with("offered"), "{id}: {f}");
    }
    for id in [
        "heartbleed",
        "CCS",
        "ROBOT",
        "POODLE_SSL",
        "SWEET32",
        "LOGJAM",
        "BEAST",
        "RC4",
    ] {
        finding(id);
    }
    let bad: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("HIGH" | "CRITICAL")))
        .collect();
    assert!(bad.is_empty(), "HIGH/CRITICAL findings: {bad:#?}\n{report}");
    std::fs::copy(&json, support::test_output_dir().join("testssl.json")).ok();
}

/// `n` sequential HTTPS requests on new connections to `name`, each
/// verified against the CA: (status codes, subjects served).
fn new_connections(ca: &Path, https: SocketAddr, name: &str, n: usize) -> Vec<(String, String)> {
    let (resolve, url) = at(name, https, "/node");
    (0..n)
        .map(|_| {
            let r = curl(
                ca,
                &[
                    "-v",
                    "--http1.1",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--resolve",
                    &resolve,
                    &url,
                ],
            );
            let subject = r.subject().unwrap_or("-").to_string();
            (r.stdout, subject)
        })
        .collect()
}

#[test]
fn a_renewed_certificate_is_loaded_by_sighup_under_load_with_no_failed_request() {
    // 2 ms per page: the keep-alive run below spans the reload.
    let nodes = DemoNodes::start(&["a", "b"], 16, Duration::from_millis(2));
    let ca = Ca::new();
    let old = ca.issue("site", "old.example.test", &["www.example.test"], (-1, 90));
    let (wc, https) = start(|l, a, port| {
        base_config(l, a, "")
            + &tls_config(port, &[&old], "")
            + &group_config(
                "web",
                "",
                &[("a", nodes.addr(0), ""), ("b", nodes.addr(1), "")],
            )
    });
    wc.wait_all_up();
    let ca_path = ca.pem_path();
    let out = tempfile::tempdir().expect("temp dir");
    // One connection kept alive through the reload: 1500 requests.
    let (resolve, _) = at("www.example.test", https, "/");
    let keepalive = {
        let (ca_path, resolve) = (ca_path.clone(), resolve.clone());
        let url = format!("https://www.example.test:{}/node?[1-1500]", https.port());
        let pattern = out.path().join("r#1");
        std::thread::spawn(move || {
            curl(
                &ca_path,
                &[
                    "--http1.1",
                    "--resolve",
                    &resolve,
                    "-w",
                    "%{http_code} %{num_connects}\n",
                    "-o",
                    &pattern.display().to_string(),
                    &url,
                ],
            )
        })
    };
    // New connections before, during and after the reload.
    let fresh = {
        let ca_path = ca_path.clone();
        std::thread::spawn(move || new_connections(&ca_path, https, "www.example.test", 40))
    };
    std::thread::sleep(Duration::from_millis(500));
    // Renewed: same names, new key, new subject; written over the old files.
    let renewed = ca.issue(
        "renewed",
        "renewed.example.test",
        &["www.example.test"],
        (-1, 90),
    );
    std::fs::copy(&renewed.0, &old.0).expect("replace the chain");
    std::fs::copy(&renewed.1, &old.1).expect("replace the key");
    wc.signal(nix::sys::signal::Signal::SIGHUP);
    wc.wait_status("the reload", |s| s["config"]["reloads_ok"] == 1);
    let during = fresh.join().expect("new connections");
    let kept = keepalive.join().expect("keep-alive run");
    let after = new_connections(&ca_path, https, "www.example.test", 5);

    assert!(kept.ok, "keep-alive curl failed: {}", kept.stderr);
    let lines: Vec<&str> = kept.stdout.lines().collect();
    assert_eq!(lines.len(), 1500, "{}", kept.stderr);
    assert!(
        lines.iter().all(|l| l.starts_with("200 ")),
        "{}",
        kept.stdout
    );
    // One TLS connection carried them all, across the reload.
    let connects: usize = lines
        .iter()
        .filter_map(|l| l.split(' ').nth(1)?.parse::<usize>().ok())
        .sum();
    assert_eq!(connects, 1, "{}", kept.stdout);
    for (code, subject) in during.iter().chain(&after) {
        assert_eq!(code, "200", "{during:?}");
        assert!(
            subject == "CN=old.example.test" || subject == "CN=renewed.example.test",
            "{subject}"
        );
    }
    assert_eq!(during[0].1, "CN=old.example.test", "{during:?}");
    assert!(
        after.iter().all(|(_, s)| s == "CN=renewed.example.test"),
        "{after:?}"
    );
    let status = wc.status();
    assert_eq!(
        status["tls"][0]["certificates"][0]["subject"],
        "CN=renewed.example.test"
    );
}

#[test]
fn a_bad_certificate_on_reload_keeps_the_old_one() {
    let nodes = DemoNodes::start(&["a"], 8, Duration::ZERO);
    let ca = Ca::new();
    let good = ca.issue("site", "good.example.test", &["www.example.test"], (-1, 90));
    let other = ca.issue(
        "other",
        "other.example.test",
        &["www.example.test"],
        (-1, 90),
    );
    let (wc, https) = start(|l, a, port| {
        base_config(l, a, "")
            + &tls_config(port, &[&good], "")
            + &group_config("web", "", &[("a", nodes.addr(0), "")])
    });
    let served = || new_connections(&ca.pem_path(), https, "www.example.test", 1).remove(0);
    assert_eq!(
        served(),
        ("200".to_string(), "CN=good.example.test".to_string())
    );
    // A key that is not the certificate's.
    std::fs::copy(&other.1, &good.1).expect("replace the key");
    wc.signal(nix::sys::signal::Signal::SIGHUP);
    let status = wc.wait_status("the failed reload", |s| s["config"]["reloads_failed"] == 1);
    let error = status["config"]["last_reload_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let config = wc.config_path.display().to_string();
    assert!(error.starts_with(&format!("{config}:")), "{error}");
    assert!(
        error.contains("[[tls]] #1 certificate #1 key `key`"),
        "{error}"
    );
    assert!(error.contains("not the private key"), "{error}");
    // Still the old certificate (whose key webcluster kept in memory).
    assert_eq!(
        served(),
        ("200".to_string(), "CN=good.example.test".to_string())
    );
    // A chain file with no certificate in it: the same.
    std::fs::copy(&other.1, &good.0).expect("garble the chain");
    wc.signal(nix::sys::signal::Signal::SIGHUP);
    let status = wc.wait_status("the second failed reload", |s| {
        s["config"]["reloads_failed"] == 2
    });
    let error = status["config"]["last_reload_error"].as_str().unwrap_or("");
    assert!(
        error.contains("key `chain`") && error.contains("holds no certificate"),
        "{error}"
    );
    assert_eq!(
        served(),
        ("200".to_string(), "CN=good.example.test".to_string())
    );
}

#[test]
fn tls_addresses_stay_on_reload_and_a_near_expiry_is_warned_about() {
    let nodes = DemoNodes::start(&["a"], 8, Duration::ZERO);
    let ca = Ca::new();
    // Expires in 5 days: warned about at start, flagged in the JSON.
    let cert = ca.issue("site", "www.example.test", &["www.example.test"], (-80, 5));
    let (wc, https) = start(|l, a, port| {
        base_config(l, a, "")
            + &tls_config(port, &[&cert], "")
            + &group_config("web", "", &[("a", nodes.addr(0), "")])
    });
    let status = wc.status();
    let c = &status["tls"][0]["certificates"][0];
    assert_eq!(c["expiring_soon"], true, "{status:#}");
    let days = c["expires_in_days"].as_i64();
    assert!(matches!(days, Some(4 | 5)), "{status:#}");
    assert!(wc.log().contains("expires on"), "{}", wc.log());
    let page = http_get(wc.admin, "/", &[]).expect("page").body;
    assert!(page.contains("days: renew"), "{page}");
    // `webcluster check` lists the listener and its certificate.
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(&wc.config_path)
        .output()
        .expect("webcluster check");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains(&format!("tls #1 listen {https}")),
        "{summary}"
    );
    assert!(
        summary.contains("for www.example.test (default)"),
        "{summary}"
    );
    // A moved TLS address is kept, like a plain one, and said.
    let text = std::fs::read_to_string(&wc.config_path).expect("config");
    let moved = text.replace(&https.to_string(), &format!("127.0.0.1:{}", free_port()));
    std::fs::write(&wc.config_path, moved).expect("rewrite");
    wc.signal(nix::sys::signal::Signal::SIGHUP);
    wc.wait_status("the reload", |s| s["config"]["reloads_ok"] == 1);
    assert!(wc.log().contains("TLS listeners"), "{}", wc.log());
    let served = new_connections(&ca.pem_path(), https, "www.example.test", 1);
    assert_eq!(
        served[0],
        ("200".to_string(), "CN=www.example.test".to_string())
    );
    assert_eq!(wc.status()["tls"][0]["listen"][0], https.to_string());
}

/// `webcluster check` of a config with this `[[tls]]` text (after a valid
/// group): its stderr, which must be a refusal, and the file.
fn check_refuses(tls: &str) -> (String, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("webcluster.toml");
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[[group]]\nname = \"web\"\n[[group.node]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\n{tls}"
    );
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run webcluster check");
    assert!(!out.status.success(), "accepted:\n{tls}");
    (String::from_utf8_lossy(&out.stderr).into_owned(), dir, path)
}

#[test]
fn every_certificate_fault_is_a_config_error_with_file_line_and_key() {
    let ca = Ca::new();
    let good = ca.issue("good", "a.test", &["a.test"], (-1, 90));
    let other = ca.issue("other", "a.test", &["a.test"], (-1, 90));
    let expired = ca.issue("expired", "a.test", &["a.test"], (-30, -1));
    let missing = (ca.dir.path().join("missing.pem"), good.1.clone());
    let no_cert = (good.1.clone(), good.1.clone());
    let mismatch = (good.0.clone(), other.1.clone());
    // (certificates, key at fault, what the message says), the faulty
    // value on line 12 (`[[tls]]` is line 10).
    let cases: [(&(PathBuf, PathBuf), &str, &str); 4] = [
        (&missing, "chain", "cannot read"),
        (&no_cert, "chain", "holds no certificate"),
        (&mismatch, "key", "not the private key"),
        (&expired, "chain", "expired on"),
    ];
    for (cert, key, says) in cases {
        let (err, _dir, path) = check_refuses(&tls_config(4443, &[cert], ""));
        let at = format!("{}:12:", path.display());
        assert!(err.contains(&at), "{err}");
        assert!(
            err.contains(&format!("[[tls]] #1 certificate #1 key `{key}`")),
            "{err}"
        );
        assert!(err.contains(says), "{err}");
    }
    // No certificate at all: no default.
    let (err, _dir, path) =
        check_refuses("[[tls]]\nlisten = [\"127.0.0.1:4443\"]\ncertificates = []\n");
    assert!(err.contains(&format!("{}:12:", path.display())), "{err}");
    assert!(
        err.contains("key `certificates`") && err.contains("default"),
        "{err}"
    );
    // TLS 1.1 is refused, and a TLS address that is a plain listener too.
    let (err, _dir, _) = check_refuses(&tls_config(4443, &[&good], "min_version = \"1.1\""));
    assert!(
        err.contains("key `min_version`") && err.contains("RFC 8996"),
        "{err}"
    );
    let (err, _dir, _) = check_refuses(&tls_config(8080, &[&good], ""));
    assert!(
        err.contains("key `listen`") && err.contains("plain proxy listener"),
        "{err}"
    );
}

#[test]
fn plain_http_is_redirected_to_https_and_https_gets_hsts() {
    let nodes = DemoNodes::start(&["a"], 8, Duration::ZERO);
    let ca = Ca::new();
    let cert = ca.issue("site", "www.example.test", &["www.example.test"], (-1, 90));
    let (wc, https) = start(|l, a, port| {
        base_config(l, a, "")
            + &tls_config(port, &[&cert], "")
            + &group_config("web", "", &[("a", nodes.addr(0), "")])
            + "[[route]]\npath = \"/open\"\ngroup = \"web\"\n\n"
            + "[[route]]\ngroup = \"web\"\nhttps_redirect = true\nhsts_max_age = \"365d\"\nhsts_include_subdomains = true\n"
    });
    let r = http_get(
        wc.listen,
        "/shop/cart?item=1&q=a%20b",
        &[("Host", "www.example.test:8080")],
    )
    .expect("GET");
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(
            format!(
                "https://www.example.test:{}/shop/cart?item=1&q=a%20b",
                https.port()
            )
            .as_str()
        )
    );
    assert_eq!(r.header("strict-transport-security"), None);
    // HEAD (`curl -I`): the same answer without its body, and the
    // connection goes on.
    let mut c = support::KeepAliveClient::connect(wc.listen).expect("connect");
    let r = c
        .request("HEAD", "/shop/", &[("Host", "www.example.test")], b"")
        .expect("HEAD");
    assert_eq!(r.status, 308);
    assert_eq!(r.body, "");
    let r = c
        .get("/x", &[("Host", "www.example.test")])
        .expect("GET after HEAD");
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(r.body, "308 Permanent Redirect\n");
    // The node never saw any of them.
    let proxied = || node(&wc.status(), "a")["proxied_total"].as_u64();
    assert_eq!(proxied(), Some(0));
    let r = http_get(wc.listen, "/open", &[]).expect("GET /open");
    assert_eq!(r.status, 200);
    assert_eq!(proxied(), Some(1));
    assert_eq!(r.header("strict-transport-security"), None);
    // Over TLS: proxied, with HSTS.
    let (resolve, url) = at("www.example.test", https, "/shop/cart?item=1");
    let r = curl(
        &ca.pem_path(),
        &["--http1.1", "-D", "-", "--resolve", &resolve, &url],
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.starts_with("HTTP/1.1 200"), "{}", r.stdout);
    assert!(
        r.stdout.lines().any(|l| l.trim_end().eq_ignore_ascii_case(
            "strict-transport-security: max-age=31536000; includeSubDomains"
        )),
        "{}",
        r.stdout
    );
    // curl follows the redirect from plain HTTP to HTTPS.
    let plain = format!("http://www.example.test:{}/shop/?x=1", wc.listen.port());
    let resolve_plain = format!("www.example.test:{}:127.0.0.1", wc.listen.port());
    let r = curl(
        &ca.pem_path(),
        &[
            "-L",
            "--resolve",
            &resolve_plain,
            "--resolve",
            &resolve,
            "-w",
            " %{url_effective}",
            &plain,
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    // The node got the path and query over HTTPS.
    let end = format!(" https://www.example.test:{}/shop/?x=1", https.port());
    assert!(r.stdout.ends_with(&end), "{}", r.stdout);
    assert!(
        r.stdout.contains("GET <code>/shop/?x=1</code>"),
        "{}",
        r.stdout
    );
}

/// A node that answers a WebSocket handshake with 101, then echoes every
/// byte (one connection, bounded in time).
fn websocket_echo_node() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        // The scraper's requests come too: serve connections until one
        // asks for an upgrade.
        for stream in listener.incoming().take(50) {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                if !matches!(stream.read(&mut byte), Ok(1)) {
                    break;
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            if !head.contains("upgrade: websocket") {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let proto = head.contains("x-forwarded-proto: https");
            let _ = stream.write_all(
                format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Saw-Https: {proto}\r\n\r\n").as_bytes(),
            );
            let mut buf = [0u8; 4096];
            for _ in 0..1000 {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            return;
        }
    });
    addr
}

#[test]
fn websocket_upgrade_works_over_a_tls_listener() {
    let node = websocket_echo_node();
    let ca = Ca::new();
    let cert = ca.issue("site", "ws.example.test", &["ws.example.test"], (-1, 90));
    let (_wc, https) = start(|l, a, port| {
        base_config(l, a, "")
            + &tls_config(port, &[&cert], "")
            + &group_config("web", "scrape = false", &[("a", node, "")])
    });
    let tcp = TcpStream::connect(https).expect("connect");
    let mut tls = tls_client(&ca, "ws.example.test", tcp);
    tls.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("send the handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !head.ends_with(b"\r\n\r\n") && Instant::now() < deadline {
        tls.read_exact(&mut byte).expect("read the 101");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("x-saw-https: true"), "{head}");
    for message in [&b"hello over tls"[..], b"and again"] {
        tls.write_all(message).expect("send");
        let mut back = vec![0u8; message.len()];
        tls.read_exact(&mut back).expect("echo");
        assert_eq!(back, message);
    }
}

/// A TLS client verifying the chain against the test CA (rustls).
fn tls_client(
    ca: &Ca,
    name: &str,
    tcp: TcpStream,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read(ca.pem_path()).expect("CA");
    for c in rustls_pki_der(&ca_pem) {
        roots.add(c).expect("add the CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(webcluster::tls::provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn a_proxy_protocol_header_comes_before_the_handshake() {
    let nodes = DemoNodes::start(&["a"], 8, Duration::ZERO);
    let ca = Ca::new();
    let cert = ca.issue("site", "www.example.test", &["www.example.test"], (-1, 90));
    let (_wc, https) = start(|l, a, port| {
        base_config(l, a, "proxy_protocol_from = [\"127.0.0.1/32\"]")
            + &tls_config(port, &[&cert], "")
            + &group_config("web", "", &[("a", nodes.addr(0), "")])
    });
    // As HAProxy in `mode tcp` with `send-proxy` sends it: the header in
    // plain text, then the visitor's TLS bytes.
    let mut tcp = TcpStream::connect(https).expect("connect");
    tcp.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 50000 443\r\n")
        .expect("PROXY header");
    let mut tls = tls_client(&ca, "www.example.test", tcp);
    tls.write_all(b"GET /headers HTTP/1.1\r\nHost: www.example.test\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("x-forwarded-for: 203.0.113.7"), "{answer}");
    assert!(answer.contains("x-forwarded-proto: https"), "{answer}");
    // The port the visitor connected to, on the balancer in front.
    assert!(answer.contains("x-forwarded-port: 443"), "{answer}");
}

#[test]
fn a_silent_client_is_closed_at_the_handshake_timeout() {
    let nodes = DemoNodes::start(&["a"], 8, Duration::ZERO);
    let ca = Ca::new();
    let cert = ca.issue("site", "www.example.test", &["www.example.test"], (-1, 90));
    let (wc, https) = start(|l, a, port| {
        base_config(l, a, "")
            + "[timeouts]\nclient_read = \"1s\"\n\n"
            + &tls_config(port, &[&cert], "")
            + &group_config("web", "", &[("a", nodes.addr(0), "")])
    });
    let mut tcp = TcpStream::connect(https).expect("connect");
    // Bounds the test, not the proxy: the proxy must close first.
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let n = tcp
        .read(&mut buf)
        .expect("the proxy closes the silent connection");
    assert_eq!(n, 0);
    support::wait_until(
        "the timed-out handshake is counted",
        Duration::from_secs(10),
        || {
            http_get(wc.admin, "/metrics", &[]).is_ok_and(|r| {
                r.body
                    .contains("webcluster_tls_handshakes_total{result=\"timeout\",version=\"-\"} 1")
            })
        },
    );
    // Garbage instead of a ClientHello: refused, counted.
    let mut tcp = TcpStream::connect(https).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("HTTP/1.1 200"),
        "{rest:?}"
    );
    support::wait_until(
        "the failed handshake is counted",
        Duration::from_secs(10),
        || {
            http_get(wc.admin, "/metrics", &[]).is_ok_and(|r| {
                r.body
                    .contains("webcluster_tls_handshakes_total{result=\"failure\",version=\"-\"} 1")
            })
        },
    );
}

/// The DER certificates of a PEM text.
fn rustls_pki_der(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.expect("PEM"))
        .collect()
}
