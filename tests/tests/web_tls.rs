//! The real binary with `[http.tls]` and a self-signed certificate the test makes: curl, trusting
//! only that certificate, gets the pages over HTTPS with the security headers, a `Secure` session
//! cookie and HSTS. The node's CRM database and journal are private files (0600 / 0700).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use system_tests::*;

const CONFIG: &str = r#"
[[desk.user]]
id = "1001"
name = "Alice Agent"
role = "agent"
password = "agent1001"
"#;

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D", "-"])
        .args(args)
        .output()
        .expect("run curl");
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn https_with_the_operators_certificate() {
    require_command("curl");
    let certs = tempfile::tempdir().expect("tempdir");
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).expect("cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("key");
    let platform = Platform::start(&format!(
        "{CONFIG}\n[http.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let base = format!("https://localhost:{}", platform.http.port());
    let resolve = format!("localhost:{}:127.0.0.1", platform.http.port());
    let cacert = cert.display().to_string();

    let (page, err) = curl(&["--cacert", &cacert, "--resolve", &resolve, &format!("{base}/")]);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}{err}");
    let head = page.to_ascii_lowercase();
    for header in [
        "content-security-policy: default-src 'none'; script-src 'self'",
        "x-frame-options: deny",
        "referrer-policy: no-referrer",
        "x-content-type-options: nosniff",
        "strict-transport-security: max-age=",
    ] {
        assert!(head.contains(header), "{header} missing:\n{page}");
    }

    let (login, err) = curl(&[
        "--cacert",
        &cacert,
        "--resolve",
        &resolve,
        "-H",
        "content-type: application/json",
        "-H",
        &format!("origin: {base}"),
        "--data",
        r#"{"user":"1001","password":"agent1001"}"#,
        &format!("{base}/api/v1/login"),
    ]);
    assert!(login.starts_with("HTTP/1.1 200"), "{login}{err}");
    let cookie = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    // Without trusting the certificate, curl refuses: it really is TLS with that certificate.
    let (none, _) = curl(&["--resolve", &resolve, &format!("{base}/healthz")]);
    assert!(!none.starts_with("HTTP/1.1 200"), "{none}");

    // The node's data files are its own.
    let dir = platform.dir.path();
    assert_eq!(mode(&dir.join("cc.db")), 0o600);
    for side in ["cc.db-wal", "cc.db-shm"] {
        if dir.join(side).exists() {
            assert_eq!(mode(&dir.join(side)), 0o600, "{side}");
        }
    }
    assert_eq!(mode(&dir.join("data/journal")), 0o700);
    for entry in std::fs::read_dir(dir.join("data/journal"))
        .expect("journal")
        .flatten()
    {
        assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
    }
}
