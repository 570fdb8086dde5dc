//! Running under systemd: the notifications a `Type=notify` unit waits for, read from a real
//! notification socket the test makes (as systemd does: NOTIFY_SOCKET, WATCHDOG_USEC).

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::support::{App, assert_success};

/// The next notification datagram, as text.
fn next(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 4096];
    let n = socket
        .recv(&mut buffer)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

/// Reads notifications until one contains `wanted`; every one read on the way is returned too.
fn until(socket: &UnixDatagram, wanted: &str) -> Vec<String> {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let message = next(socket);
        let done = message.lines().any(|l| l == wanted);
        seen.push(message);
        if done {
            return seen;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {wanted}: {seen:?}"
        );
    }
}

#[test]
fn readiness_reload_watchdog_and_stop_are_notified_to_systemd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("notification socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let path = path.display().to_string();
    // 400 ms: simgate pings every 200 ms.
    let mut app = App::spawn_env(
        "",
        "",
        "",
        "",
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "400000")],
    );
    // READY=1 comes once the listener is bound: the gateway answers now.
    let before_ready = until(&socket, "READY=1");
    assert!(
        !before_ready.iter().any(|m| m.contains("WATCHDOG=1")),
        "no ping before ready: {before_ready:?}"
    );
    assert_success(&app.echoscu(), "echoscu right after READY=1");
    let pings_from = Instant::now();
    until(&socket, "WATCHDOG=1");
    until(&socket, "WATCHDOG=1");
    assert!(
        pings_from.elapsed() < Duration::from_secs(2),
        "pinged at half the interval"
    );

    app.signal("HUP");
    until(&socket, "RELOADING=1");
    until(&socket, "READY=1");
    app.wait_for_log("configuration reloaded");

    app.signal("TERM");
    until(&socket, "STOPPING=1");
    assert!(app.wait_exit().success());
}
