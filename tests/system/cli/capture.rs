//! `sgbd-edge capture --once` and `capture compose-demo` through the binary.

use crate::harness::daemon::bin;
use crate::harness::demo_assets;

#[test]
fn capture_once_runs_the_demo_shelf_and_reports_bad_pictures() {
    let _turn = crate::harness::shared();
    let tmp = tempfile::tempdir().unwrap();
    let incoming = tmp.path().join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    // compose-demo writes the shelf and a planogram for our folder.
    let out = bin()
        .args(["capture", "compose-demo", "--assets"])
        .arg(demo_assets())
        .arg("--out")
        .arg(tmp.path().join("shelf"))
        .arg("--incoming")
        .arg(&incoming)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let planogram = std::fs::read_to_string(tmp.path().join("shelf/planogram.toml")).unwrap();
    let cfg_path = tmp.path().join("sgbd.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[node]\ndata_dir = {:?}\n[log]\nfilter = \"warn\"\n[capture]\nsettle_ms = 20\npoll_ms = 10\n{planogram}",
            tmp.path().join("var")
        ),
    )
    .unwrap();
    let run = |shelf: &[u8], name: &str| {
        std::fs::write(incoming.join(name), shelf).unwrap();
        let o =
            bin().arg("capture").arg("--config").arg(&cfg_path).args(["--once", "--wait-ms", "3000"]).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let shelf = std::fs::read(tmp.path().join("shelf/shelf-a.jpg")).unwrap();
    let (code, stdout) = run(&shelf, "1.jpg");
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(stdout.matches(" changed ").count(), 12, "{stdout}");
    assert!(stdout.contains("status shelf-a: Ok"), "{stdout}");
    // Same shelf again, a new process: unchanged (hashes and crops read back from the store).
    let (code, stdout) = run(&shelf, "2.jpg");
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(stdout.matches(" unchanged ").count(), 12, "{stdout}");
    // A truncated upload that settled: exit 1, a clear line, the camera degraded.
    let (code, stdout) = run(&shelf[..shelf.len() / 2], "3.jpg");
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("bad picture") && stdout.contains("truncated"), "{stdout}");
    assert!(stdout.contains("Degraded"), "{stdout}");
}
