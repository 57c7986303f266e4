//! The `import` command's exit codes and summary, through the binary.

use crate::harness::write;
use std::path::Path;

fn cli(args: &[&str], data_dir: &Path) -> (i32, String) {
    let cfg = data_dir.join("c.toml");
    std::fs::write(&cfg, format!("[node]\ndata_dir = {:?}\n", data_dir.join("var").display().to_string())).unwrap();
    let out =
        crate::harness::daemon::bin().args(args).arg("--config").arg(&cfg).env_remove("RUST_LOG").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn import_cli_exit_codes_and_summary() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "cat.csv", "sku,title\nA,a\nB,b\n,c\n");
    let (code, out) = cli(&["import", "catalog", good.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 rows, 2 inserted, 0 duplicates, 1 errors"), "{out}");
    assert!(out.contains("line 4: empty sku"), "{out}");
    assert!(dir.path().join("var/sgbd.db").is_file(), "db under data_dir");
    let all_bad = write(dir.path(), "bad.csv", "sku,title\n,x\n,y\n");
    assert_eq!(cli(&["import", "catalog", all_bad.to_str().unwrap()], dir.path()).0, 1);
    let unusable = write(dir.path(), "u.csv", "what,ever\n1,2\n");
    let (code, out) = cli(&["import", "interactions", unusable.to_str().unwrap()], dir.path());
    assert_eq!(code, 1);
    assert!(out.contains("line 1"), "{out}");
    let ev = write(dir.path(), "ev.csv", "event_id,user,sku,kind,ts_ms\ne1,u,A,view,1\n");
    assert_eq!(cli(&["import", "interactions", ev.to_str().unwrap()], dir.path()).0, 0);
    let (code, out) = cli(&["import", "interactions", ev.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "re-import of only duplicates is a success");
    assert!(out.contains("0 inserted, 1 duplicates"), "{out}");
}
