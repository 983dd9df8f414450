//! `parley healthcheck` as a container runs it: the exit code is the verdict.

use std::process::Command;

fn healthcheck(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("healthcheck")
        .args(args)
        .env_remove("PARLEY_LISTEN")
        .env_remove("PARLEY_HEALTHCHECK_URL")
        .output()
        .expect("running parley healthcheck")
}

#[test]
fn a_url_nothing_answers_on_exits_non_zero() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = healthcheck(&[
        "--url",
        &format!("http://127.0.0.1:{port}/health"),
        "--timeout-ms",
        "2000",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error:"),
        "{out:?}"
    );
}

#[test]
fn a_2xx_answer_exits_zero() {
    // A one-shot HTTP server on a plain socket: enough for one GET.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf);
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .unwrap();
    });
    let out = healthcheck(&["--listen", &format!("0.0.0.0:{}", addr.port())]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
