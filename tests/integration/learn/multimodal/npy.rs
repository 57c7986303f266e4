//! `.npy` reading: files written here (checked against candle's independent reader) and, when
//! SGBD_DATA is set, the real TikTok feature file.

use sgbd_edge::learn::npy::{read_features, read_npy, write_npy_f16, write_npy_f32};

#[test]
fn roundtrip_f32_and_f16_match_candle_reader() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<f32> = (0..24).map(|i| (i as f32 - 11.0) * 0.37).collect();
    let p32 = dir.path().join("a.npy");
    write_npy_f32(&p32, &[4, 6], &data).unwrap();
    let a = read_npy(&p32).unwrap();
    assert_eq!(a.shape, vec![4, 6]);
    assert_eq!(a.data, data);
    let c = candle_core::Tensor::read_npy(&p32).unwrap();
    assert_eq!(c.dims(), &[4, 6]);
    assert_eq!(c.flatten_all().unwrap().to_vec1::<f32>().unwrap(), data);

    let p16 = dir.path().join("b.npy");
    write_npy_f16(&p16, &[3, 8], &data).unwrap();
    let (r, k, v) = read_features(&p16).unwrap();
    assert_eq!((r, k), (3, 8));
    let c = candle_core::Tensor::read_npy(&p16).unwrap().to_dtype(candle_core::DType::F32).unwrap();
    assert_eq!(c.flatten_all().unwrap().to_vec1::<f32>().unwrap(), v);
    for (x, y) in data.iter().zip(&v) {
        assert!((x - y).abs() <= 4e-3 * x.abs().max(1.0), "{x} vs {y}");
    }
    // A 1-D file is not a feature matrix.
    let p1 = dir.path().join("c.npy");
    write_npy_f32(&p1, &[24], &data).unwrap();
    assert!(read_features(&p1).unwrap_err().to_string().contains("2-D"));
    // A missing file is an i/o error naming the path.
    let e = read_npy(&dir.path().join("missing.npy")).unwrap_err().to_string();
    assert!(e.contains("missing.npy"), "{e}");
}

#[test]
fn real_tiktok_image_features() {
    let _turn = crate::harness::shared();
    let Some(root) = crate::harness::sgbd_data() else { return };
    let path = root.join("tiktok_mmssl/image_feat.npy");
    let (r, c, v) = read_features(&path).unwrap();
    assert_eq!((r, c), (6710, 128));
    assert!(v.iter().all(|x| x.is_finite()));
    let reference = candle_core::Tensor::read_npy(&path).unwrap().to_dtype(candle_core::DType::F32).unwrap();
    assert_eq!(reference.flatten_all().unwrap().to_vec1::<f32>().unwrap(), v);
    // Real features vary across items.
    assert!(v[..c] != v[c..2 * c]);
}
