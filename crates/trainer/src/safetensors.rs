//! A small reader and writer of the safetensors format
//! (<https://github.com/huggingface/safetensors>): an 8-byte little-endian
//! header length, a JSON header (`name -> {dtype, shape, data_offsets}` and
//! an optional `__metadata__` map of strings), then the raw little-endian data.
//! Only `F32` tensors are written or read. Files are written atomically.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::error::{Result, TrainError};
use crate::fsutil::atomic_write;

/// A float tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor of `shape` holding `data`.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?}"
        );
        HostTensor { shape, data }
    }
}

/// The contents of a safetensors file: tensors in file order, and metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SafeTensors {
    /// Tensors by name, in the order written.
    pub tensors: Vec<(String, HostTensor)>,
    /// String metadata.
    pub metadata: BTreeMap<String, String>,
}

impl SafeTensors {
    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Adds a tensor.
    pub fn push(&mut self, name: impl Into<String>, t: HostTensor) {
        self.tensors.push((name.into(), t));
    }

    /// Serialises to bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut header = Map::new();
        if !self.metadata.is_empty() {
            header.insert("__metadata__".into(), json!(self.metadata));
        }
        let mut offset = 0usize;
        for (name, t) in &self.tensors {
            let len = t.data.len() * 4;
            header.insert(
                name.clone(),
                json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + len]}),
            );
            offset += len;
        }
        let mut head = serde_json::to_vec(&Value::Object(header)).expect("json");
        while !head.len().is_multiple_of(8) {
            head.push(b' ');
        }
        let mut out = Vec::with_capacity(8 + head.len() + offset);
        out.extend_from_slice(&(head.len() as u64).to_le_bytes());
        out.extend_from_slice(&head);
        for (_, t) in &self.tensors {
            for v in &t.data {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// Parses bytes; `path` is only used in error messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |reason: String| TrainError::checkpoint(path, reason);
        if bytes.len() < 8 {
            return Err(bad(format!(
                "truncated safetensors file ({} bytes, expected at least 8)",
                bytes.len()
            )));
        }
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        if n > bytes.len() - 8 {
            return Err(bad(format!(
                "truncated or corrupt safetensors file: header of {n} bytes announced, {} present",
                bytes.len() - 8
            )));
        }
        let header: Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n])
            .map_err(|e| bad(format!("corrupt safetensors header: {e}")))?;
        let data = &bytes[8 + n..];
        let mut metadata = BTreeMap::new();
        let mut entries = vec![];
        for (name, v) in header {
            if name == "__metadata__" {
                let m = v
                    .as_object()
                    .ok_or_else(|| bad("__metadata__ is not a map".into()))?;
                for (k, v) in m {
                    let s = v
                        .as_str()
                        .ok_or_else(|| bad(format!("metadata {k} is not a string")))?;
                    metadata.insert(k.clone(), s.to_string());
                }
                continue;
            }
            let dtype = v.get("dtype").and_then(Value::as_str).unwrap_or("?");
            if dtype != "F32" {
                return Err(bad(format!("tensor {name}: dtype {dtype}, expected F32")));
            }
            let shape: Vec<usize> = v
                .get("shape")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
                .ok_or_else(|| bad(format!("tensor {name}: bad shape")))?;
            let offs: Vec<usize> = v
                .get("data_offsets")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
                .filter(|o: &Vec<usize>| o.len() == 2)
                .ok_or_else(|| bad(format!("tensor {name}: bad data_offsets")))?;
            let (begin, end) = (offs[0], offs[1]);
            // checked: a header may announce any shape; only what the data holds is allocated
            let bytes_of_shape = shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .and_then(|n| n.checked_mul(4));
            if end < begin || bytes_of_shape != Some(end - begin) {
                return Err(bad(format!(
                    "tensor {name}: data_offsets {begin}..{end} do not hold shape {shape:?}"
                )));
            }
            if end > data.len() {
                return Err(bad(format!(
                    "truncated safetensors file: tensor {name} ends at byte {end} of the data, \
                     which has {} bytes",
                    data.len()
                )));
            }
            let values = data[begin..end]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            entries.push((begin, name, HostTensor::new(shape, values)));
        }
        entries.sort_by_key(|(b, _, _)| *b);
        Ok(SafeTensors {
            tensors: entries.into_iter().map(|(_, n, t)| (n, t)).collect(),
            metadata,
        })
    }

    /// Scalars in all tensors.
    pub fn scalars(&self) -> usize {
        self.tensors.iter().map(|(_, t)| t.data.len()).sum()
    }

    /// The name of the first tensor holding a NaN or an infinity.
    pub fn first_non_finite(&self) -> Option<&str> {
        self.tensors
            .iter()
            .find(|(_, t)| t.data.iter().any(|v| !v.is_finite()))
            .map(|(n, _)| n.as_str())
    }

    /// Reads a file (a regular file of at most
    /// [`MAX_TENSOR_FILE_BYTES`](crate::fsutil::MAX_TENSOR_FILE_BYTES)).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = crate::fsutil::read_bounded(path, crate::fsutil::MAX_TENSOR_FILE_BYTES)?;
        Self::from_bytes(&bytes, path)
    }

    /// Writes a file atomically (temporary file, flush, rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        atomic_write(path, &self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_independent_reader_agree() {
        let mut st = SafeTensors::default();
        st.push(
            "a.w",
            HostTensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5]),
        );
        st.push("b", HostTensor::new(vec![1, 1], vec![0.25]));
        st.metadata.insert("step".into(), "7".into());
        let bytes = st.to_bytes();
        let back = SafeTensors::from_bytes(&bytes, Path::new("x")).unwrap();
        assert_eq!(back, st);
        // the reference implementation reads what we write
        let other = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = other.tensor("a.w").unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        assert_eq!(&t.data()[20..24], &(-6.5f32).to_le_bytes());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            // PROPTEST_CASES runs longer fuzzing (docs/RELIABILITY.md)
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(512),
        ))]

        /// Random bytes, and a real file with bytes changed or cut, are read or
        /// refused; never a panic, never an allocation larger than the file.
        #[test]
        fn reader_never_panics(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            flips in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 0..6),
            cut in 0usize..400,
            shape in proptest::collection::vec(0usize..usize::MAX, 0..4),
        ) {
            let _ = SafeTensors::from_bytes(&junk, Path::new("junk"));
            let mut st = SafeTensors::default();
            st.push("a", HostTensor::new(vec![2, 3], vec![1.0; 6]));
            st.push("b", HostTensor::new(vec![4], vec![-2.0; 4]));
            st.metadata.insert("step".into(), "3".into());
            let mut bytes = st.to_bytes();
            for (at, v) in flips {
                let n = bytes.len();
                bytes[at % n] = v;
            }
            bytes.truncate(cut.max(1).min(bytes.len()));
            let _ = SafeTensors::from_bytes(&bytes, Path::new("flipped"));
            // a header announcing any shape, over 8 bytes of data
            let header = format!(
                "{{\"w\":{{\"dtype\":\"F32\",\"shape\":{shape:?},\"data_offsets\":[0,8]}}}}"
            );
            let mut file = (header.len() as u64).to_le_bytes().to_vec();
            file.extend(header.as_bytes());
            file.extend([0u8; 8]);
            let _ = SafeTensors::from_bytes(&file, Path::new("shape"));
        }
    }

    #[test]
    fn truncated_and_corrupt_files_are_errors() {
        let mut st = SafeTensors::default();
        st.push("w", HostTensor::new(vec![4], vec![1.0; 4]));
        let bytes = st.to_bytes();
        for cut in [0, 5, 8, 20, bytes.len() - 1] {
            let err =
                SafeTensors::from_bytes(&bytes[..cut], Path::new("ck.safetensors")).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("ck.safetensors: "), "{msg}");
            assert!(
                msg.contains("truncated") || msg.contains("corrupt"),
                "cut {cut}: {msg}"
            );
        }
        let mut junk = bytes.clone();
        junk[8] = b'#';
        assert!(SafeTensors::from_bytes(&junk, Path::new("x")).is_err());
    }
}
