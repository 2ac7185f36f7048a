//! The other backends (compiled in with `--features wgpu,ndarray`; CI runs
//! these on Mesa's software Vulkan driver, lavapipe): the same outputs and
//! gradients as flex from the same weights, and the command line training on them.

#[cfg(feature = "wgpu")]
mod wgpu_model {
    use burn::tensor::{Device, Int, Tensor, TensorData};
    use model::params::{for_each_param, for_each_param_grad, map_params};
    use model::{CellLayout, CharLmConfig, InputKind};

    fn host(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn char_lm_matches_the_cpu_on_wgpu() {
        let cpu = Device::flex().autodiff();
        let gpu = Device::wgpu(Default::default()).autodiff();
        for (input, layout) in [
            (InputKind::OneHot, CellLayout::Gates),
            (InputKind::Embedding, CellLayout::Fused),
        ] {
            let cfg = CharLmConfig::new(27, 27)
                .with_input(input)
                .with_layout(layout)
                .with_d_hidden(16)
                .with_d_embedding(8);
            let a = cfg.init(3, &cpu);
            // the same weights on the GPU
            let mut values = vec![];
            for_each_param(&a, |_, v| values.push(host(v)));
            let mut k = 0;
            let b = map_params(cfg.init(4, &gpu), |_, v| {
                let t = Tensor::from_data(
                    TensorData::new(values[k].clone(), v.dims()),
                    &gpu.clone().inner(),
                );
                k += 1;
                t
            });
            let ids = [1i64, 5, 0, 26, 3, 3, 9, 12];
            let run = |m: &model::CharLm, d: &Device| {
                let x = Tensor::<1, Int>::from_data(TensorData::new(ids.to_vec(), [8]), d);
                let (logits, _) = m.forward(x, 2, m.zero_state(2, d), true);
                let loss = logits.clone().square().mean();
                let grads = loss.backward();
                let mut g = vec![];
                for_each_param_grad(m, &grads, |_, _, grad| g.push(host(grad.unwrap())));
                (host(logits.inner()), g)
            };
            let (la, ga) = run(&a, &cpu);
            let (lb, gb) = run(&b, &gpu);
            for (x, y) in la.iter().zip(&lb) {
                assert!((x - y).abs() < 1e-4, "logits {x} vs {y}");
            }
            for (p, q) in ga.iter().zip(&gb) {
                for (x, y) in p.iter().zip(q) {
                    assert!((x - y).abs() < 1e-4, "gradient {x} vs {y}");
                }
            }
        }
    }
}

/// Training on each compiled-in backend gives the losses of flex, step by step.
#[test]
fn training_runs_on_every_compiled_backend() {
    use crate::common::*;
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let d = data.to_str().unwrap();
    let trace = |device: &str| -> Vec<f64> {
        let run = dir.path().join(format!("run-{device}"));
        let file = dir.path().join(format!("loss-{device}.txt"));
        ok(&charlstm(&train_args(
            d,
            run.to_str().unwrap(),
            &[
                "--steps",
                "6",
                "--device",
                device,
                "--loss-trace",
                file.to_str().unwrap(),
            ],
        )));
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    };
    let reference = trace("flex");
    assert_eq!(reference.len(), 6);
    let mut others = vec![];
    if cfg!(feature = "ndarray") {
        others.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        others.push("wgpu");
    }
    for device in others {
        let losses = trace(device);
        for (k, (a, b)) in reference.iter().zip(&losses).enumerate() {
            assert!((a - b).abs() < 1e-4, "{device} step {k}: {b} vs flex {a}");
        }
    }
}
