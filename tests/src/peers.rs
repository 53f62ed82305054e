//! Real SIP phones driven by the tests through their command lines: baresip (Debian) and a PJSIP
//! phone (the pjsua2 Python binding from PyPI, `tests/peers/pjsua_phone.py`). Each prints what
//! happens on stdout; tests wait for those lines (events), never for time.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A phone process: its stdin for commands and its stdout lines as they come.
pub struct Phone {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far (for failure messages).
    pub seen: String,
    _home: Option<tempfile::TempDir>,
}

impl Phone {
    fn spawn(mut cmd: Command, home: Option<tempfile::TempDir>) -> Phone {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start phone");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        let tx_err = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Diagnostics only: stderr lines are shown in failure messages, marked as such.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx_err.send(format!("(stderr) {line}"));
            }
        });
        Phone {
            child,
            lines,
            seen: String::new(),
            _home: home,
        }
    }

    /// Waits for a line containing `what`; false when the phone exits, a line containing one of
    /// `refused` comes first, or 20 s pass.
    pub fn wait_for(&mut self, what: &str, refused: &[&str]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    self.seen.push_str(&format!("(exited: {status})\n"));
                    return false;
                }
            };
            self.seen.push_str(&line);
            self.seen.push('\n');
            if line.contains(what) {
                return true;
            }
            if refused.iter().any(|r| line.contains(r)) {
                return false;
            }
        }
    }

    /// Sends one command line.
    pub fn send(&mut self, command: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        let _ = stdin.write_all(format!("{command}\n").as_bytes());
        let _ = stdin.flush();
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts baresip with `account` (an accounts-file line) and `extra` config lines; it auto-answers
/// when the account says `answermode=auto`, takes `/dial <uri>`, digits (DTMF in a call) and `b`
/// (hang up) on stdin, and dumps the audio it decodes to `<dumps>/*-dec.wav`.
pub fn baresip(account: &str, extra: &str) -> (Phone, PathBuf) {
    let home = tempfile::tempdir().expect("tempdir");
    let conf = home.path().join(".baresip");
    let dumps = home.path().join("dumps");
    std::fs::create_dir_all(&conf).expect("mkdir");
    std::fs::create_dir_all(&dumps).expect("mkdir");
    let sip_port = crate::free_port();
    std::fs::write(
        conf.join("config"),
        format!(
            "poll_method\tepoll\nnet_interface\t127.0.0.1\nsip_listen\t127.0.0.1:{sip_port}\n\
audio_player\taufile,/dev/null\naudio_source\tausine,440\naudio_alert\taufile,/dev/null\n\
ausrc_srate\t48000\nauplay_srate\t48000\nausrc_channels\t2\nauplay_channels\t2\n\
snd_path\t{}\nmodule_path\t/usr/lib/baresip/modules\nmodule\tstdio.so\nmodule\tg711.so\n\
module\tausine.so\nmodule\taufile.so\nmodule\tsrtp.so\nmodule\tsndfile.so\n\
module_app\taccount.so\nmodule_app\tmenu.so\n{extra}",
            dumps.display()
        ),
    )
    .expect("config");
    std::fs::write(conf.join("accounts"), format!("{account}\n")).expect("accounts");
    std::fs::write(conf.join("contacts"), "").expect("contacts");
    let mut cmd = Command::new("baresip");
    cmd.args(["-f", conf.to_str().unwrap_or_default()])
        .env("HOME", home.path());
    (Phone::spawn(cmd, Some(home)), dumps)
}

/// The Python that has the pjsua2 binding: `PJSUA_PYTHON`, else `python3` if it has it.
pub fn pjsua_python() -> String {
    let candidates = [std::env::var("PJSUA_PYTHON").ok(), Some("python3".to_string())];
    for python in candidates.into_iter().flatten() {
        let ok = Command::new(&python)
            .args(["-c", "import pjsua2"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return python;
        }
    }
    panic!(
        "the pjsua2 Python binding is missing: run scripts/test-all.sh (it installs pjsua2-python from \
PyPI in a virtualenv and sets PJSUA_PYTHON), or `pip install pjsua2-python` and set PJSUA_PYTHON"
    );
}

/// Starts the PJSIP phone for `user` at `gateway` (registered unless `password` is `-`).
pub fn pjsua(gateway: &str, user: &str, password: &str, srtp: bool) -> Phone {
    pjsua_with(gateway, user, password, srtp, None)
}

/// Like [`pjsua`]; with `tls_ca`, over TLS to `gateway` (its TLS port), verifying the gateway's
/// certificate against that CA file.
pub fn pjsua_with(gateway: &str, user: &str, password: &str, srtp: bool, tls_ca: Option<&Path>) -> Phone {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/pjsua_phone.py");
    let mut cmd = Command::new(pjsua_python());
    cmd.arg(script).args([gateway, user, password]);
    if srtp {
        cmd.arg("srtp");
    }
    if let Some(ca) = tls_ca {
        cmd.arg(format!("tls={}", ca.display()));
    }
    Phone::spawn(cmd, None)
}

/// Peak absolute sample of the 16-bit PCM in a WAV file (after its 44-byte header).
pub fn wav_peak(wav: &Path) -> i32 {
    let bytes = std::fs::read(wav).unwrap_or_default();
    bytes
        .get(44..)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|s| i32::from(i16::from_le_bytes([s[0], s[1]])).abs())
        .max()
        .unwrap_or(0)
}

/// Peak sample over the audio baresip decoded (its `*-dec.wav` dumps in `dumps`).
pub fn decoded_peak(dumps: &Path) -> i32 {
    std::fs::read_dir(dumps)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
                .map(|p| wav_peak(&p))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}
