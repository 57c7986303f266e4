//! Imports: layouts detected by header, per-row errors with line numbers, idempotence, MMRec
//! `.inter` mapping, and (with SGBD_DATA) the real files. (The `import` command's exit codes:
//! `system::cli::import`.)

use crate::harness::write;
use sgbd_edge::store::{
    import_catalog_csv, import_interactions, import_interactions_with, EventKind, InterImportOptions, Store, StoreError,
};

fn lines(errors: &[(usize, String)]) -> Vec<usize> {
    errors.iter().map(|(l, _)| *l).collect()
}

#[test]
fn generic_catalogue_reports_bad_rows_by_line_and_imports_the_rest() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "cat.csv",
        "sku,title,description,colour,image_path\n\
         A1,Blue shirt,\"Soft cotton,\nlong sleeves\",blue,photos/a1.jpg\n\
         ,No sku,x,red,\n\
         A2,Red dress,,red\n\
         A3,Green hat,Wool,green,\n\
         A4,,missing title,black,\n\
         A5,Socks,Warm,,/abs/a5.jpg\n",
    );
    let mut s = Store::open_in_memory().unwrap();
    let sum = import_catalog_csv(&mut s, &csv).unwrap();
    assert_eq!(sum.format, "generic catalogue csv");
    assert_eq!((sum.rows, sum.inserted, sum.duplicates), (6, 3, 0));
    // Line 2-3 hold the quoted multi-line row, so the empty sku is on line 4.
    assert_eq!(lines(&sum.errors), [4, 5, 7], "{:?}", sum.errors);
    assert!(sum.errors[0].1.contains("empty sku"));
    assert!(sum.errors[1].1.contains("expected 5 fields, found 4"));
    assert!(sum.errors[2].1.contains("empty title"));
    let a1 = s.item_by_sku("A1").unwrap().unwrap();
    assert_eq!(a1.description, "Soft cotton,\nlong sleeves");
    assert_eq!(a1.attributes, serde_json::json!({"colour": "blue"}));
    let dir_abs = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(a1.image_path, Some(dir_abs.join("photos/a1.jpg").to_string_lossy().into_owned()));
    let a5 = s.item_by_sku("A5").unwrap().unwrap();
    assert_eq!(a5.image_path.as_deref(), Some("/abs/a5.jpg"));
    assert_eq!(a5.attributes, serde_json::json!({}), "empty columns are left out");

    // Second import: nothing new; a changed row updates in place.
    let again = import_catalog_csv(&mut s, &csv).unwrap();
    assert_eq!((again.inserted, again.duplicates, again.errors.len()), (0, 3, 3));
    assert_eq!(s.counts().unwrap().items, 3);
    let changed = write(dir.path(), "cat2.csv", "sku,title\nA3,Green wool hat\nA3,Green wool hat\n");
    let sum = import_catalog_csv(&mut s, &changed).unwrap();
    assert_eq!((sum.inserted, sum.duplicates), (0, 2));
    assert_eq!(s.item_by_sku("A3").unwrap().unwrap().title, "Green wool hat");
}

#[test]
fn hm_and_myntra_layouts_are_detected_with_their_photos() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("images/011")).unwrap();
    std::fs::write(dir.path().join("images/011/0111565001.jpg"), b"jpeg").unwrap();
    std::fs::write(dir.path().join("images/15970.jpg"), b"jpeg").unwrap();
    let hm = write(
        dir.path(),
        "articles.csv",
        "article_id,product_code,prod_name,colour_group_name,detail_desc\n\
         0111565001,111565,20 den 1p Stockings,Black,\"Semi shiny nylon stockings, 20 denier.\"\n\
         0111586001,111586,Shape Up 30 den 1p Tights,Black,Tights with built-in support.\n",
    );
    let myntra = write(
        dir.path(),
        "styles.csv",
        "id,gender,masterCategory,baseColour,productDisplayName\n\
         15970,Men,Apparel,Navy Blue,Turtle Check Men Navy Blue Shirt\n\
         39386,Men,Apparel,Blue,Peter England Men Party Blue Jeans\n\
         59263,Women,Accessories,Silver,Titan Women Silver Watch,extra\n",
    );
    let mut s = Store::open_in_memory().unwrap();
    let sum = import_catalog_csv(&mut s, &hm).unwrap();
    assert_eq!((sum.format.as_str(), sum.inserted), ("h&m articles csv", 2));
    let it = s.item_by_sku("0111565001").unwrap().unwrap();
    assert_eq!(it.title, "20 den 1p Stockings");
    assert_eq!(it.description, "Semi shiny nylon stockings, 20 denier.");
    assert_eq!(it.attributes, serde_json::json!({"product_code": "111565", "colour_group_name": "Black"}));
    assert!(it.image_path.unwrap().ends_with("images/011/0111565001.jpg"));
    assert_eq!(s.item_by_sku("0111586001").unwrap().unwrap().image_path, None, "no photo on disk");

    let sum = import_catalog_csv(&mut s, &myntra).unwrap();
    assert_eq!((sum.format.as_str(), sum.inserted), ("myntra styles.csv", 2));
    assert_eq!(lines(&sum.errors), [4]);
    let it = s.item_by_sku("15970").unwrap().unwrap();
    assert_eq!((it.title.as_str(), it.description.as_str()), ("Turtle Check Men Navy Blue Shirt", ""));
    assert_eq!(it.attributes["baseColour"], "Navy Blue");
    assert!(it.image_path.unwrap().ends_with("images/15970.jpg"));
}

#[test]
fn unusable_files_are_errors() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open_in_memory().unwrap();
    let odd = write(dir.path(), "odd.csv", "name,price\nx,1\n");
    assert!(matches!(import_catalog_csv(&mut s, &odd), Err(StoreError::Import { line: 1, .. })));
    assert!(matches!(import_interactions(&mut s, &odd), Err(StoreError::Import { line: 1, .. })));
    let inter = write(dir.path(), "bad.inter", "user\titem\n0\t1\n");
    assert!(matches!(import_interactions(&mut s, &inter), Err(StoreError::Import { line: 1, .. })));
    assert!(matches!(import_catalog_csv(&mut s, &dir.path().join("missing.csv")), Err(StoreError::Io { .. })));
    assert_eq!(s.counts().unwrap().items + s.counts().unwrap().interactions, 0);
}

#[test]
fn events_csv_is_idempotent_and_reports_bad_rows() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "events.csv",
        "event_id,user,sku,kind,ts_ms,kiosk\n\
         e1,u1,A1,view,1000,k1\n\
         e2,u1,A1,purchase,2000,\n\
         e3,u2,A2,like,3000,k1\n\
         e4,u2,A2,cart,soon,k1\n\
         e1,u1,A9,view,1,k1\n\
         e5,,A2,scan,5000,k2\n\
         e6,u2,A3,Add-To-Cart,6000,k2\n",
    );
    let mut s = Store::open_in_memory().unwrap();
    let sum = import_interactions(&mut s, &csv).unwrap();
    assert_eq!(sum.format, "events csv");
    assert_eq!((sum.rows, sum.inserted, sum.duplicates), (7, 3, 1));
    assert_eq!(lines(&sum.errors), [4, 5, 7], "{:?}", sum.errors);
    let evs = s.interactions().unwrap();
    assert_eq!(evs.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(), ["e1", "e2", "e6"]);
    assert_eq!(evs[0].kiosk.as_deref(), Some("k1"));
    assert_eq!(evs[1].kiosk, None);
    assert_eq!(evs[2].kind, EventKind::Cart);
    let again = import_interactions(&mut s, &csv).unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 4));
    assert_eq!(s.counts().unwrap().interactions, 3);
}

#[test]
fn mmrec_inter_files_keep_split_order_and_timestamps() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let three =
        write(dir.path(), "baby.inter", "userID\titemID\tx_label\n0\t5\t0\n0\t7\t2\n1\t5\t1\n1\t9\t3\n1\t5\t0\n");
    let mut s = Store::open_in_memory().unwrap();
    let sum = import_interactions(&mut s, &three).unwrap();
    assert_eq!(sum.format, "mmrec .inter (3 columns)");
    assert_eq!((sum.rows, sum.inserted, sum.duplicates), (5, 3, 1));
    assert_eq!(lines(&sum.errors), [5]);
    let rows = s.interactions_with_split().unwrap();
    let got: Vec<_> =
        rows.iter().map(|(e, sp)| (e.event_id.as_str(), e.user.as_str(), e.sku.as_str(), e.ts_ms, *sp)).collect();
    assert_eq!(
        got,
        [
            ("inter:baby:0:5", "0", "5", 0, Some(0)),
            ("inter:baby:0:7", "0", "7", 1, Some(2)),
            ("inter:baby:1:5", "1", "5", 2, Some(1))
        ]
    );
    assert!(rows.iter().all(|(e, _)| e.kind == EventKind::Purchase && e.kiosk.is_none()));
    assert_eq!(import_interactions(&mut s, &three).unwrap().inserted, 0, "re-import adds nothing");

    let six = write(
        dir.path(),
        "hm.inter",
        "userID\titemID\ttimestamp\tprice\tsales_channel_id\tx_label\n\
         0\t1\t1587254400\t0.05\t2\t0\n\
         0\t2\tnever\t0.05\t2\t0\n\
         1\t1\t1593129600\t0.03\t1\t2\n",
    );
    let imap = write(dir.path(), "i_id_mapping.csv", "article_id\titemID\n0111565001\t1\n0111586001\t2\n");
    let opts = InterImportOptions { item_map: Some(imap), user_map: None };
    let mut s = Store::open_in_memory().unwrap();
    let sum = import_interactions_with(&mut s, &six, &opts).unwrap();
    assert_eq!((sum.inserted, lines(&sum.errors)), (2, vec![3]));
    let rows = s.interactions_with_split().unwrap();
    assert_eq!(rows[0].0.ts_ms, 1_587_254_400_000);
    assert_eq!(rows[0].0.sku, "0111565001");
    assert_eq!(rows[0].0.event_id, "inter:hm:0:1", "event ids keep the file's ids");
    assert_eq!((rows[1].0.user.as_str(), rows[1].1), ("1", Some(2)));
    // An id missing from the map is a row error.
    let unmapped = write(dir.path(), "x.inter", "userID\titemID\tx_label\n0\t99\t0\n");
    let sum = import_interactions_with(&mut s, &unmapped, &opts).unwrap();
    assert_eq!((sum.inserted, lines(&sum.errors)), (0, vec![2]));
}

#[test]
fn real_hm_interactions_join_the_real_catalogue() {
    let _turn = crate::harness::shared();
    let Some(data) = crate::harness::sgbd_data() else { return };
    let hm = data.join("hm_sample");
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Store::open(&tmp.path().join("sgbd.db"), 5000).unwrap();
    let cat = import_catalog_csv(&mut s, &hm.join("articles_sample.csv")).unwrap();
    assert_eq!((cat.rows, cat.inserted, cat.errors.len()), (11_800, 11_800, 0));
    let opts = InterImportOptions { item_map: Some(hm.join("i_id_mapping.csv")), user_map: None };
    let sum = import_interactions_with(&mut s, &hm.join("hm.inter"), &opts).unwrap();
    assert_eq!((sum.rows, sum.inserted, sum.errors.len()), (8_457, 8_457, 0));
    let rows = s.interactions_with_split().unwrap();
    let mut per_split = [0usize; 3];
    for (e, sp) in &rows {
        per_split[sp.unwrap() as usize] += 1;
        assert!(e.ts_ms > 1_500_000_000_000, "seconds became ms");
    }
    // Each user with 3+ pairs has exactly one valid and one test pair.
    assert_eq!(per_split[1], per_split[2]);
    assert_eq!(per_split.iter().sum::<usize>(), 8_457);
    let items: std::collections::HashSet<String> = s.items().unwrap().into_iter().map(|i| i.sku).collect();
    assert!(rows.iter().all(|(e, _)| items.contains(&e.sku)), "every interaction joins the catalogue");
    assert_eq!(s.counts().unwrap().users, 1_037);
    let again = import_interactions_with(&mut s, &hm.join("hm.inter"), &opts).unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 8_457));
}
