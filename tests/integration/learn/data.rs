//! MMRec `.inter` data: the real Baby split loads with the documented counts (when SGBD_DATA is
//! set).

#[test]
fn real_baby_split_loads() {
    let _turn = crate::harness::shared();
    let Some(root) = crate::harness::sgbd_data() else { return };
    let p = root.join("mmrec_baby");
    if !p.exists() {
        eprintln!("skipping: {} absent", p.display());
        return;
    }
    let d = sgbd_edge::learn::data::load_inter(&sgbd_edge::learn::data::find_inter(&p).unwrap()).unwrap();
    assert_eq!((d.n_users, d.n_items), (19445, 7050));
    assert_eq!((d.train.len(), d.valid.len(), d.test.len()), (119674, 20559, 20559));
    d.validate().unwrap();
}
