//! Reading NumPy `.npy` feature files (format versions 1, 2 and 3), float16 or float32, C order.
//!
//! candle has `Tensor::read_npy`, but it allocates whatever the header claims (header length and
//! element count) before checking the file, so a truncated or hostile file can abort the process.
//! This reader validates the header and the exact payload size against the file length first and
//! never panics on bad input.

use super::{LearnError, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// A sane upper bound for a header (NumPy itself writes at most a few hundred bytes).
const MAX_HEADER_LEN: usize = 1 << 20;

/// An array read from a `.npy` file, converted to f32, in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl NpyArray {
    /// Rows and columns of a 2-D array, or an error naming `path`.
    pub fn dims2(&self, path: &Path) -> Result<(usize, usize)> {
        match self.shape.as_slice() {
            [r, c] => Ok((*r, *c)),
            s => Err(bad(path, format!("expected a 2-D array, found shape {s:?}"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F16,
    F32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

#[derive(Debug, PartialEq, Eq)]
struct Header {
    dtype: Dtype,
    endian: Endian,
    shape: Vec<usize>,
}

fn bad(path: &Path, msg: impl Into<String>) -> LearnError {
    let msg = msg.into();
    tracing::warn!(path = %path.display(), error = %msg, "bad npy file");
    LearnError::Data { path: path.to_path_buf(), msg }
}

/// Reads a `.npy` file holding a float16 or float32 array in C order.
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let io = |source| LearnError::Io { path: PathBuf::from(path), source };
    let bytes = std::fs::read(path).map_err(io)?;
    let arr = parse_npy(&bytes).map_err(|msg| bad(path, msg))?;
    tracing::debug!(path = %path.display(), shape = ?arr.shape, "read npy");
    Ok(arr)
}

/// Reads a 2-D feature matrix: (rows, cols, row-major data).
pub fn read_features(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let arr = read_npy(path)?;
    let (r, c) = arr.dims2(path)?;
    Ok((r, c, arr.data))
}

/// One item-feature modality: a row-major [n_items, dim] matrix (row i = item i).
#[derive(Debug, Clone, PartialEq)]
pub struct Modality {
    pub name: String,
    pub n_items: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Modality {
    /// Builds a modality from a row-major matrix, checking its size.
    pub fn new(name: impl Into<String>, n_items: usize, dim: usize, data: Vec<f32>) -> Result<Self> {
        let name = name.into();
        if data.len() != n_items * dim || dim == 0 {
            return Err(LearnError::Invalid(format!(
                "modality {name}: {} values for {n_items} items x {dim} dims",
                data.len()
            )));
        }
        if data.iter().any(|x| !x.is_finite()) {
            return Err(LearnError::Invalid(format!("modality {name}: features contain NaN or infinity")));
        }
        Ok(Self { name, n_items, dim, data })
    }

    /// Loads a feature file whose row count must equal `n_items` (row i = item i); the modality
    /// is named after the file stem.
    pub fn load(path: &Path, n_items: usize) -> Result<Self> {
        let (rows, dim, data) = read_features(path)?;
        if rows != n_items {
            return Err(bad(path, format!("{rows} feature rows but the interactions have {n_items} items")));
        }
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Self::new(name, rows, dim, data).map_err(|e| bad(path, e.to_string()))
    }
}

/// Parses the bytes of a `.npy` file. Errors are plain messages (the caller adds the path).
pub fn parse_npy(bytes: &[u8]) -> std::result::Result<NpyArray, String> {
    let mut r = bytes;
    let mut magic = [0u8; 6];
    r.read_exact(&mut magic).map_err(|_| "file too short for the npy magic string".to_string())?;
    if &magic != MAGIC {
        return Err("not an npy file (bad magic string)".into());
    }
    let mut ver = [0u8; 2];
    r.read_exact(&mut ver).map_err(|_| "file too short for the npy version".to_string())?;
    let header_len = match ver[0] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|_| "truncated header length".to_string())?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|_| "truncated header length".to_string())?;
            u32::from_le_bytes(b) as usize
        }
        v => return Err(format!("unsupported npy format version {v}.{}", ver[1])),
    };
    if header_len > MAX_HEADER_LEN || header_len > r.len() {
        return Err(format!("header length {header_len} exceeds the file ({} bytes left)", r.len()));
    }
    let (head, payload) = r.split_at(header_len);
    let head = std::str::from_utf8(head).map_err(|_| "header is not valid text".to_string())?;
    let header = parse_header(head)?;
    let n = header
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {:?} overflows", header.shape))?;
    let width = match header.dtype {
        Dtype::F16 => 2,
        Dtype::F32 => 4,
    };
    let need = n.checked_mul(width).ok_or_else(|| format!("shape {:?} overflows", header.shape))?;
    if payload.len() != need {
        return Err(format!("payload is {} bytes but shape {:?} needs {need}", payload.len(), header.shape));
    }
    let data: Vec<f32> = match (header.dtype, header.endian) {
        (Dtype::F16, e) => payload
            .chunks_exact(2)
            .map(|c| {
                let b = [c[0], c[1]];
                let bits = if e == Endian::Little { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) };
                half::f16::from_bits(bits).to_f32()
            })
            .collect(),
        (Dtype::F32, e) => payload
            .chunks_exact(4)
            .map(|c| {
                let b = [c[0], c[1], c[2], c[3]];
                if e == Endian::Little {
                    f32::from_le_bytes(b)
                } else {
                    f32::from_be_bytes(b)
                }
            })
            .collect(),
    };
    Ok(NpyArray { shape: header.shape, data })
}

/// Parses the Python-literal header dict, e.g. `{'descr': '<f2', 'fortran_order': False, 'shape': (6710, 128), }`.
fn parse_header(head: &str) -> std::result::Result<Header, String> {
    let body = head.trim().strip_prefix('{').and_then(|s| s.trim_end().strip_suffix('}'));
    let body = body.ok_or_else(|| format!("header is not a dict: {head:?}"))?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let (key, after) = take_quoted(rest).ok_or_else(|| format!("bad key in header {head:?}"))?;
        let after = after.trim_start().strip_prefix(':').ok_or_else(|| format!("missing ':' in header {head:?}"))?;
        let after = after.trim_start();
        // A value ends at the first ',' outside parentheses.
        let mut depth = 0i32;
        let mut end = after.len();
        for (i, ch) in after.char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let value = after[..end].trim();
        match key {
            "descr" => descr = Some(take_quoted(value).map(|(v, _)| v).ok_or_else(|| format!("bad descr {value:?}"))?),
            "fortran_order" => {
                fortran = Some(match value {
                    "False" => false,
                    "True" => true,
                    v => return Err(format!("bad fortran_order {v:?}")),
                })
            }
            "shape" => shape = Some(parse_shape(value)?),
            k => return Err(format!("unknown header key {k:?}")),
        }
        rest = after[end..].strip_prefix(',').unwrap_or(&after[end..]).trim_start();
    }
    let descr = descr.ok_or("header has no 'descr'")?;
    if fortran.ok_or("header has no 'fortran_order'")? {
        return Err("Fortran-order arrays are not supported (save with np.ascontiguousarray)".into());
    }
    let shape = shape.ok_or("header has no 'shape'")?;
    let (endian, code) = match descr.split_at_checked(1) {
        Some(("<", c)) | Some(("|", c)) | Some(("=", c)) => (Endian::Little, c),
        Some((">", c)) => (Endian::Big, c),
        _ => (Endian::Little, descr),
    };
    let dtype = match code {
        "f2" | "e" => Dtype::F16,
        "f4" | "f" => Dtype::F32,
        _ => return Err(format!("unsupported dtype {descr:?} (only float16 and float32 are read)")),
    };
    Ok(Header { dtype, endian, shape })
}

/// Takes a '...' or "..." string from the start of `s`; returns it and the remainder.
fn take_quoted(s: &str) -> Option<(&str, &str)> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = &s[1..];
    let end = inner.find(q)?;
    Some((&inner[..end], &inner[end + 1..]))
}

fn parse_shape(v: &str) -> std::result::Result<Vec<usize>, String> {
    let inner =
        v.strip_prefix('(').and_then(|s| s.strip_suffix(')')).ok_or_else(|| format!("shape is not a tuple: {v:?}"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>().map_err(|_| format!("bad shape entry {s:?}")))
        .collect()
}

/// Writes a float32 array as a `.npy` v1 file (C order). Used by tests and tools.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write_npy(path, shape, "<f4", &data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
}

/// Writes a float16 array (converted from f32) as a `.npy` v1 file (C order).
pub fn write_npy_f16(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let bytes: Vec<u8> = data.iter().flat_map(|x| half::f16::from_f32(*x).to_bits().to_le_bytes()).collect();
    write_npy(path, shape, "<f2", &bytes)
}

fn write_npy(path: &Path, shape: &[usize], descr: &str, payload: &[u8]) -> Result<()> {
    let n: usize = shape.iter().product();
    let width = if descr == "<f2" { 2 } else { 4 };
    if n * width != payload.len() {
        return Err(LearnError::Invalid(format!("write_npy: shape {shape:?} does not match {} bytes", payload.len())));
    }
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut head = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    // Pad so that magic + version + len + header is a multiple of 64, ending in '\n'.
    while (10 + head.len() + 1) % 64 != 0 {
        head.push(' ');
    }
    head.push('\n');
    let len = u16::try_from(head.len()).map_err(|_| LearnError::Invalid("npy header too long".into()))?;
    let mut out = Vec::with_capacity(10 + head.len() + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(payload);
    std::fs::write(path, out).map_err(|source| LearnError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(version: u8, header: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn header_variants() {
        let h = parse_header("{'descr': '<f2', 'fortran_order': False, 'shape': (6710, 128), }\n").unwrap();
        assert_eq!(h, Header { dtype: Dtype::F16, endian: Endian::Little, shape: vec![6710, 128] });
        let h = parse_header("{\"shape\": (3,), \"descr\": \">f4\", \"fortran_order\": False}").unwrap();
        assert_eq!(h, Header { dtype: Dtype::F32, endian: Endian::Big, shape: vec![3] });
        let h = parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': ()}").unwrap();
        assert!(h.shape.is_empty());
    }

    #[test]
    fn v2_and_big_endian_payloads() {
        let payload: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|x| x.to_be_bytes()).collect();
        let a = parse_npy(&raw(2, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", &payload)).unwrap();
        assert_eq!(a.data, vec![1.5, -2.0]);
        let payload: Vec<u8> =
            [0.25f32, 3.0].iter().flat_map(|x| half::f16::from_f32(*x).to_bits().to_le_bytes()).collect();
        let a = parse_npy(&raw(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 2), }", &payload)).unwrap();
        assert_eq!((a.shape, a.data), (vec![1, 2], vec![0.25, 3.0]));
    }

    #[test]
    fn rejects_bad_input_without_panicking() {
        let ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
        let p8 = [0u8; 8];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "too short"),
            (b"\x93NUMPX\x01\x00".to_vec(), "magic"),
            (raw(4, ok, &p8), "version"),
            (raw(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", &p8), "Fortran"),
            (raw(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", &p8), "dtype"),
            (raw(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", &p8), "dtype"),
            (raw(1, ok, &[0u8; 7]), "payload"),
            (raw(1, ok, &[0u8; 12]), "payload"),
            (
                raw(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 9999999), }", &p8),
                "overflow",
            ),
            (raw(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,x), }", &p8), "shape entry"),
            (raw(1, "{'descr': '<f4', 'fortran_order': False}", &p8), "no 'shape'"),
            (raw(1, "'descr': '<f4'", &p8), "not a dict"),
            (raw(1, "{'descr: '<f4', 'fortran_order': False, 'shape': (2,), }", &p8), "header"),
        ];
        for (bytes, want) in cases {
            let err = parse_npy(&bytes).unwrap_err();
            assert!(err.contains(want), "expected {want:?} in {err:?}");
        }
        // A header length pointing past the end of the file.
        let mut b = raw(2, ok, &p8);
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_npy(&b).unwrap_err().contains("exceeds"));
        // Every truncation of a valid file is an error, never a panic.
        let good = raw(1, ok, &p8);
        assert!(parse_npy(&good).is_ok());
        for cut in 0..good.len() {
            assert!(parse_npy(&good[..cut]).is_err());
        }
    }
}
