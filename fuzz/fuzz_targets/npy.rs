//! The `.npy` reader (item feature files): any bytes give an array or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = sgbd_edge::learn::npy::parse_npy(data) {
        // The element count, computed so that a shape like [huge, huge, 0] does not overflow here.
        let n = if a.shape.contains(&0) { Some(0) } else { a.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) };
        assert_eq!(n, Some(a.data.len()), "shape {:?} but {} values", a.shape, a.data.len());
        let _ = a.dims2(std::path::Path::new("fuzz.npy"));
    }
});
