//! Test harness: starts the real `simgate` binary on an ephemeral port with a temporary
//! storage folder, and drives it with DCMTK tools and raw sockets.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const DEADLINE: Duration = Duration::from_secs(60);

/// One running simgate with its own folder, config and log.
pub struct App {
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub port: u16,
    /// Port of the HTTP side.
    pub http_port: u16,
    /// Port of the TLS DICOM listener, when the config has `[listener.tls]`.
    pub tls_port: Option<u16>,
    child: Option<Child>,
    starts: u32,
    /// Environment variables for the simgate process.
    env: Vec<(String, String)>,
    /// Where the storage folder is, when not `data` in `dir`.
    storage_dir: Option<PathBuf>,
}

impl App {
    /// Starts simgate with the default settings for tests plus `extra` lines appended to the
    /// `[listener]` table and `storage_extra` to `[storage]`.
    pub fn spawn_with(listener_extra: &str, storage_extra: &str) -> App {
        Self::spawn_configured(listener_extra, storage_extra, "")
    }

    /// As [`spawn_with`](Self::spawn_with), with lines for the `[naming]` table too.
    pub fn spawn_configured(listener_extra: &str, storage_extra: &str, naming_extra: &str) -> App {
        Self::spawn_full(listener_extra, storage_extra, naming_extra, "")
    }

    /// Every table: `http_extra` follows `[http] bind = "127.0.0.1:0"` (e.g. `[[http.users]]`).
    pub fn spawn_full(
        listener_extra: &str,
        storage_extra: &str,
        naming_extra: &str,
        http_extra: &str,
    ) -> App {
        Self::spawn_env(listener_extra, storage_extra, naming_extra, http_extra, &[])
    }

    /// As [`spawn_full`](Self::spawn_full), with environment variables for simgate.
    pub fn spawn_env(
        listener_extra: &str,
        storage_extra: &str,
        naming_extra: &str,
        http_extra: &str,
        env: &[(&str, &str)],
    ) -> App {
        Self::build(
            listener_extra,
            storage_extra,
            naming_extra,
            http_extra,
            env,
            None,
        )
    }

    /// A gateway whose storage folder is `storage_dir` (a file system the test made), with
    /// `tables` appended after `[naming]` (e.g. `[forward]` and `[[destinations]]`).
    pub fn spawn_in(storage_dir: &Path, tables: &str) -> App {
        Self::build("", "", tables, "", &[], Some(storage_dir))
    }

    fn build(
        listener_extra: &str,
        storage_extra: &str,
        naming_extra: &str,
        http_extra: &str,
        env: &[(&str, &str)],
        storage_dir: Option<&Path>,
    ) -> App {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("simgate.toml");
        let config = format!(
            "[http]\nbind = \"127.0.0.1:0\"\n{http_extra}\n\
             [listener]\nae_title = \"SIMGATE\"\nbind = \"127.0.0.1:0\"\nidle_timeout = \"20s\"\nshutdown_deadline = \"10s\"\n{listener_extra}\n\
             [storage]\ndir = {storage_dir:?}\n{storage_extra}\n\
             [naming]\nbuiltin_nomenclature = \"{repo}/config/nomenclature/standard-names.csv\"\n\
             series_rules = \"{repo}/config/nomenclature/series-rules.toml\"\n{naming_extra}\n",
            repo = env!("CARGO_MANIFEST_DIR"),
            storage_dir = storage_dir
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| "data".into()),
        );
        let config = if storage_extra.contains("reserve_free_bytes") {
            config
        } else {
            config.replace("[storage]\n", "[storage]\nreserve_free_bytes = \"0 B\"\n")
        };
        std::fs::write(&config_path, config).expect("write config");
        let mut app = App {
            dir,
            config_path,
            port: 0,
            http_port: 0,
            tls_port: None,
            child: None,
            starts: 0,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            storage_dir: storage_dir.map(Path::to_path_buf),
        };
        app.start();
        app
    }

    pub fn spawn() -> App {
        Self::spawn_with("", "")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.storage_dir
            .clone()
            .unwrap_or_else(|| self.dir.path().join("data"))
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("simgate-{start}.log"))
    }

    /// The log of the current run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    /// (Re)starts the process and waits until it listens.
    pub fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_simgate"))
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info,simgate=debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn simgate");
        self.child = Some(child);
        let line = self.wait_for_log("DICOM listener ready");
        let address = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("address="))
            .expect("address in ready line");
        self.port = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let config = std::fs::read_to_string(&self.config_path).unwrap_or_default();
        if config.contains("[listener.tls]") {
            let tls = self.wait_for_log("DICOM TLS listener ready");
            self.tls_port = tls
                .split_whitespace()
                .find_map(|word| word.strip_prefix("address="))
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok());
        }
        let http = self.wait_for_log("HTTP listener ready");
        self.http_port = http
            .split_whitespace()
            .find_map(|word| word.strip_prefix("address="))
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("HTTP port");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits (bounded) for a log line containing `needle`; returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_count(needle, 1)
    }

    /// Waits until `needle` has appeared `count` times in this run's log.
    pub fn wait_for_log_count(&self, needle: &str, count: usize) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
            if lines.len() >= count {
                return lines[count - 1].to_string();
            }
            if start.elapsed() > DEADLINE {
                panic!("no {count} log lines with {needle:?} within {DEADLINE:?}; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// Sends a signal by name (TERM, HUP) with the system's kill.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!(
                    "simgate did not exit within {DEADLINE:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Peak resident memory of the running process (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmHWM");
        kib * 1024
    }

    pub fn db(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.data_dir().join("simgate.db")).expect("open db");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        conn
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).expect(sql)
    }

    /// Generates a study from `spec`, sends it with storescu, returns its Study Instance UID.
    pub fn send_study(&self, spec: &simgate_synth::StudySpec) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let study = simgate_synth::write_study(spec, dir.path()).expect("generate");
        let paths: Vec<PathBuf> = study.files.iter().map(|f| f.path.clone()).collect();
        assert_success(&self.storescu(&paths), "storescu");
        study.study_instance_uid
    }

    pub fn storescu(&self, files: &[PathBuf]) -> Output {
        self.storescu_as("CTSIM", files, &[])
    }

    pub fn storescu_as(&self, calling_ae: &str, files: &[PathBuf], extra: &[&str]) -> Output {
        let mut cmd = dcmtk("storescu");
        cmd.args(["-aet", calling_ae, "-aec", "SIMGATE"])
            .args(extra);
        cmd.arg("127.0.0.1").arg(self.port.to_string()).args(files);
        cmd.output().expect("run storescu")
    }

    pub fn echoscu_as(&self, calling_ae: &str, called_ae: &str) -> Output {
        dcmtk("echoscu")
            .args(["-aet", calling_ae, "-aec", called_ae, "127.0.0.1"])
            .arg(self.port.to_string())
            .output()
            .expect("run echoscu")
    }

    pub fn echoscu(&self) -> Output {
        self.echoscu_as("CTSIM", "SIMGATE")
    }

    /// Runs a `simgate` CLI command against this app's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_simgate"))
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .output()
            .expect("run simgate")
    }

    /// Rewrites the config file through `edit`.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config_path).expect("read config");
        std::fs::write(&self.config_path, edit(text)).expect("write config");
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A DCMTK tool with Nagle disabled (DCMTK leaves it on otherwise: ~45 ms per message).
/// A `[[http.users]]` entry for `name`; nobody signs in with it (the hash matches no password),
/// but it makes `name` a configured user, e.g. the author of a reason documented with the CLI.
pub fn configured_user(name: &str, role: &str) -> String {
    format!(
        "[[http.users]]\nname = {name:?}\nrole = \"{role}\"\n\
         password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2ltZ2F0ZXRlc3Q$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"\n"
    )
}

pub fn dcmtk(tool: &str) -> Command {
    let mut cmd = Command::new(tool);
    cmd.env("TCP_NODELAY", "1");
    cmd
}

pub fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The data set bytes of a Part-10 file: everything after the file meta group.
pub fn dataset_bytes(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("read file");
    assert_eq!(
        &bytes[128..132],
        b"DICM",
        "{} is not Part-10",
        path.display()
    );
    dataset_of(&bytes)
}

/// The data set bytes of a Part-10 file already read.
pub fn dataset_of(bytes: &[u8]) -> Vec<u8> {
    // (0002,0000) UL group length, explicit VR little endian: tag 4, VR 2, length 2, value 4.
    assert_eq!(&bytes[132..138], &[0x02, 0x00, 0x00, 0x00, b'U', b'L']);
    let group_length =
        u32::from_le_bytes([bytes[140], bytes[141], bytes[142], bytes[143]]) as usize;
    bytes[144 + group_length..].to_vec()
}

/// The transfer syntax UID in a Part-10 file's meta header.
pub fn transfer_syntax(path: &Path) -> String {
    let object = dicom_object::open_file(path).expect("open");
    object
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string()
}

/// Lines of a child's output, as they come, for tests that act in the middle of a transfer.
pub fn spawn_lines(mut cmd: Command) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    (child, rx)
}

/// All files below a folder, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_below(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A file system the test mounts (as root) and unmounts when dropped: a small tmpfs to fill,
/// or an ext4 image on a loop device to freeze.
pub struct Mount {
    pub dir: PathBuf,
    _holder: TempDir,
    image: Option<PathBuf>,
}

impl Mount {
    /// A tmpfs of `megabytes`; `None` (with the reason printed) where mounting is impossible.
    pub fn tmpfs(megabytes: u32) -> Option<Mount> {
        let holder = tempfile::tempdir().expect("tempdir");
        let dir = holder.path().join("fs");
        std::fs::create_dir(&dir).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&dir)
            .output();
        Self::mounted(mounted, dir, holder, None)
    }

    /// An ext4 file system of `megabytes` on a loop device (it can be frozen); `None` (with
    /// the reason printed) where that is impossible.
    pub fn ext4(megabytes: u32) -> Option<Mount> {
        let holder = tempfile::tempdir().expect("tempdir");
        let image = holder.path().join("fs.img");
        let dir = holder.path().join("fs");
        std::fs::create_dir(&dir).expect("mount point");
        let file = std::fs::File::create(&image).expect("image");
        file.set_len(u64::from(megabytes) * 1024 * 1024)
            .expect("image size");
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .output();
        match made {
            Ok(out) if out.status.success() => {}
            other => {
                eprintln!("SKIPPED: cannot make an ext4 image: {other:?}");
                return None;
            }
        }
        let mounted = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&dir)
            .output();
        Self::mounted(mounted, dir, holder, Some(image))
    }

    fn mounted(
        result: std::io::Result<Output>,
        dir: PathBuf,
        holder: TempDir,
        image: Option<PathBuf>,
    ) -> Option<Mount> {
        match result {
            Ok(out) if out.status.success() => Some(Mount {
                dir,
                _holder: holder,
                image,
            }),
            other => {
                eprintln!("SKIPPED: this machine cannot mount a test file system: {other:?}");
                None
            }
        }
    }

    pub fn freeze(&self) {
        let status = Command::new("fsfreeze")
            .arg("-f")
            .arg(&self.dir)
            .status()
            .expect("fsfreeze");
        assert!(status.success(), "fsfreeze -f");
    }

    pub fn thaw(&self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.dir).status();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.image.is_some() {
            self.thaw();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A port nobody listens on right now, for a peer started later. Taken below the kernel's
/// ephemeral range (32768-60999 on Linux), from a counter: a port the kernel hands out for a
/// `bind(0)` (every simgate's listeners, every client) can then never be the one a test chose
/// and has not started its peer on yet, and no two calls of one run give the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const LAST: u16 = 32_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Each test process starts elsewhere in the range (its PID), so runs side by side differ.
    let _ = NEXT.compare_exchange(
        0,
        FIRST + (std::process::id() % u32::from(LAST - FIRST)) as u16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..(LAST - FIRST) {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = FIRST + port.wrapping_sub(FIRST) % (LAST - FIRST);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{LAST}");
}

/// DCMTK's storescp in bit-preserving mode (+B): what a store SCU actually sends on the wire.
/// Used as the planning-system stand-in for forwarding tests and as the reference receiver.
pub struct Storescp {
    pub dir: TempDir,
    pub port: u16,
    child: Child,
}

impl Storescp {
    /// Starts storescp as `ae_title` on `port` with extra options (fault injection).
    pub fn start_on(ae_title: &str, port: u16, extra: &[&str]) -> Storescp {
        let dir = tempfile::tempdir().expect("tempdir");
        // A negotiation profile (-xf) replaces "accept everything" (-pm +xa).
        let accept_all: &[&str] = if extra.contains(&"-xf") {
            &[]
        } else {
            &["-pm", "+xa"]
        };
        let child = dcmtk("storescp")
            .arg("+B")
            .args(accept_all)
            .args(["-aet", ae_title])
            .args(extra)
            .arg("-od")
            .arg(dir.path())
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn storescp");
        let scp = Storescp { dir, port, child };
        // Ready once the port accepts connections. (A C-ECHO could wait behind simgate's own
        // association when storescp is single-process and told to sleep.)
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < DEADLINE, "storescp did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        scp
    }

    pub fn start(ae_title: &str) -> Storescp {
        Self::start_on(ae_title, free_port(), &[])
    }

    /// Files received so far (storescp names them by modality and SOP Instance UID).
    pub fn files(&self) -> Vec<PathBuf> {
        files_below(self.dir.path())
    }

    /// Waits until at least `count` distinct instances have arrived.
    pub fn wait_for(&self, count: usize) -> Vec<PathBuf> {
        let start = Instant::now();
        loop {
            let files = self.files();
            if files.len() >= count {
                // A file appears when storescp starts writing it: let the last one finish.
                std::thread::sleep(Duration::from_millis(200));
                return self.files();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "only {} of {count} instances arrived",
                files.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Data set bytes received, by SOP Instance UID. Files that cannot be read completely are
    /// left out: storescp writes an instance as it arrives (+B) and deletes it when the sender
    /// dies mid-transfer, so a listing can catch one half-written or just deleted.
    pub fn datasets(&self) -> std::collections::HashMap<String, Vec<u8>> {
        self.files()
            .into_iter()
            .filter_map(|path| {
                // Read once, then parse what was read: the file may vanish meanwhile.
                let bytes = std::fs::read(&path).ok()?;
                let object = dicom_object::from_reader(bytes.get(128..)?).ok()?;
                let sop = object
                    .meta()
                    .media_storage_sop_instance_uid()
                    .trim_end_matches('\0')
                    .to_string();
                Some((sop, dataset_of(&bytes)))
            })
            .collect()
    }

    /// Sends `files` with storescu (same options as to simgate) and returns the data set bytes
    /// storescp received, by SOP Instance UID.
    pub fn received(
        &self,
        files: &[PathBuf],
        extra: &[&str],
    ) -> std::collections::HashMap<String, Vec<u8>> {
        let output = dcmtk("storescu")
            .args(["-aet", "CTSIM", "-aec", "REFERENCE"])
            .args(extra)
            .arg("127.0.0.1")
            .arg(self.port.to_string())
            .args(files)
            .output()
            .expect("storescu");
        assert_success(&output, "storescu to the reference storescp");
        self.datasets()
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Storescp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reference receiver of the receive tests.
pub struct ReferenceScp;

impl ReferenceScp {
    pub fn start() -> Storescp {
        Storescp::start("REFERENCE")
    }
}

/// The Python of the venv `scripts/test.sh` makes (`SIMGATE_PYTHON` overrides), with
/// pynetdicom. Tests that need a peer DCMTK has no tool for run it; without it they fail.
pub fn python_with_pynetdicom() -> PathBuf {
    let python = std::env::var_os("SIMGATE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python")
        });
    let ok = Command::new(&python)
        .args(["-c", "import pynetdicom"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import pynetdicom: run scripts/test.sh, which makes target/pyenv",
        python.display()
    );
    python
}

/// A peer script of tests/peers, run with that Python.
pub fn python_peer(script: &str) -> Command {
    let mut cmd = Command::new(python_with_pynetdicom());
    cmd.arg(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/peers")
            .join(script),
    );
    cmd
}

/// Certificates made by the test with openssl: a CA, a server certificate for 127.0.0.1 and
/// localhost, and a client certificate, each with its key (PEM, RSA 2048 as DCMTK's BCP 195
/// profile expects); and a second CA that signed nothing here.
pub struct Pki {
    pub dir: TempDir,
}

impl Pki {
    pub fn make() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl");
            assert_success(&output, &format!("openssl {}", args.join(" ")));
        };
        for ca in ["ca", "other-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-subj",
                &format!("/CN=simgate test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        for (name, usage, san) in [
            (
                "server",
                "serverAuth",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
            ),
            ("client", "clientAuth", ""),
        ] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN=simgate test {name}"),
            ]);
            std::fs::write(
                dir.path().join(format!("{name}.ext")),
                format!(
                    "{san}basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n"
                ),
            )
            .expect("extensions");
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.crt"),
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        Pki { dir }
    }

    /// A file of this PKI, e.g. `ca.crt` or `client.key`.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}
