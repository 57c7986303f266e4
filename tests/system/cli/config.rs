//! The technician's config workflow through the real binary: shipped configs validate, a bad file
//! lists every problem and exits 78, the printed default is itself valid.

use crate::harness::daemon::bin;
use crate::harness::repo;

#[test]
fn shipped_configs_are_valid() {
    let _turn = crate::harness::shared();
    for f in ["firmware-config/dev.toml", "firmware-config/jetson-orin.toml", "firmware-config/default.toml"] {
        let out = bin().arg("validate").arg("--config").arg(repo(f)).output().unwrap();
        assert!(out.status.success(), "{f}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn bad_config_lists_every_problem_and_exits_78() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[node]\nstore_id = \"a b\"\ncolour = 3\n\n[mqtt]\nport = 0\nbroker = \"embedded\"\nhost = \"0.0.0.0\"\n",
    )
    .unwrap();
    let out = bin().arg("validate").arg("--config").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3: node.colour"), "{err}");
    assert!(err.contains("line 2: node.store_id"), "{err}");
    assert!(err.contains("line 6: mqtt.port"), "{err}");
    assert!(err.contains("line 8: mqtt.host") && err.contains("loopback"), "{err}");
    assert!(err.contains("4 problem(s)"), "{err}");
}

#[test]
fn missing_file_exits_78_without_panicking() {
    let _turn = crate::harness::shared();
    let out = bin().args(["validate", "--config", "/nonexistent/sgbd.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn printed_default_is_valid() {
    let _turn = crate::harness::shared();
    let out = bin().arg("print-default-config").output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.toml");
    std::fs::write(&p, &out.stdout).unwrap();
    let v = bin().arg("validate").arg("--config").arg(&p).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}
