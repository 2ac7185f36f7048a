//! Moving module weights between the device and safetensors files, by name,
//! with shape checks that say what does not match.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use model::params::{for_each_param, map_params, param_shapes};

use crate::error::{Result, TrainError};
use crate::optim::{from_host, to_host};
use crate::safetensors::SafeTensors;

/// Adds every parameter of `module` to `out` as `<prefix><name>`.
pub fn save_weights<M: Module>(module: &M, prefix: &str, out: &mut SafeTensors) {
    for_each_param(module, |name, value| {
        out.push(format!("{prefix}{name}"), to_host(&value))
    });
}

/// Checks that `file` holds every parameter of `module` under `<prefix><name>`
/// with the same shape, and no other tensor under `prefix`.
pub fn check_weights<M: Module>(
    module: &M,
    prefix: &str,
    file: &SafeTensors,
    path: &Path,
) -> Result<()> {
    let mut problems = vec![];
    let expected = param_shapes(module);
    for (name, dims) in &expected {
        match file.get(&format!("{prefix}{name}")) {
            None => problems.push(format!("missing {name} {dims:?}")),
            Some(t) => {
                let found = model::params::matrix_dims(&t.shape);
                if found != *dims {
                    problems.push(format!(
                        "{name}: expected shape {dims:?}, found {:?}",
                        t.shape
                    ));
                }
            }
        }
    }
    for (name, t) in &file.tensors {
        if let Some(rest) = name.strip_prefix(prefix)
            && !expected.iter().any(|(n, _)| n == rest)
        {
            problems.push(format!("unexpected {rest} {:?}", t.shape));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let shown: Vec<String> = problems.iter().take(6).cloned().collect();
        Err(TrainError::checkpoint(
            path,
            format!(
                "does not fit this model (another model shape or vocabulary?): {}{}",
                shown.join("; "),
                if problems.len() > 6 {
                    format!("; and {} more", problems.len() - 6)
                } else {
                    String::new()
                }
            ),
        ))
    }
}

/// Replaces every parameter of `module` by `<prefix><name>` of `file` (checked first).
pub fn load_weights<M: Module>(
    module: M,
    prefix: &str,
    file: &SafeTensors,
    path: &Path,
    device: &Device,
) -> Result<M> {
    check_weights(&module, prefix, file, path)?;
    Ok(map_params(module, |name, _| {
        from_host(
            file.get(&format!("{prefix}{name}")).expect("checked above"),
            device,
        )
    }))
}
