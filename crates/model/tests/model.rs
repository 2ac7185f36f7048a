//! Shape, golden, gradient, equivalence and dropout tests of the models (CPU, flex).

use burn::module::{Module, Param};
use burn::nn::{Linear, LstmConfig as BurnLstmConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use model::params::{for_each_param, for_each_param_grad, map_params, param_shapes};
use model::{
    CellLayout, CharLmConfig, Dropout, InitScheme, InputKind, LstmConfig, LstmInput, LstmState,
};
use tokenizer::rng::Rng;

fn dev() -> Device {
    Device::flex().autodiff()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.inner().into_data().try_into_vec_as::<f32>().unwrap()
}

fn ids(v: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs())),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn shapes_of_every_input_kind_and_depth() {
    let d = dev();
    for (input, vocab, layers) in [
        (InputKind::OneHot, 27, 1),
        (InputKind::Embedding, 27, 2),
        (InputKind::Embedding, 729, 3),
    ] {
        let m = CharLmConfig::new(vocab, 27)
            .with_input(input)
            .with_n_layers(layers)
            .with_d_hidden(12)
            .with_d_embedding(6)
            .init(1, &d);
        let (batch, steps) = (3, 4);
        let x = ids(
            &(0..(batch * steps) as i64)
                .map(|i| i % vocab as i64)
                .collect::<Vec<_>>(),
            &d,
        );
        let (logits, state) = m.forward(x, batch, m.zero_state(batch, &d), true);
        assert_eq!(logits.dims(), [steps * batch, 27]);
        assert_eq!(state.len(), layers);
        for s in &state {
            assert_eq!(s.h.dims(), [batch, 12]);
            assert_eq!(s.c.dims(), [batch, 12]);
        }
    }
    let shapes = param_shapes(
        &CharLmConfig::new(27, 27)
            .with_layout(CellLayout::Gates)
            .init(0, &d),
    );
    assert_eq!(shapes.len(), 14, "{shapes:?}"); // the notebook's 12 gate tensors + w + b
    assert!(shapes.contains(&("layers.0.blocks.2.wh".to_string(), [64, 64])));
}

/// A one-unit cell with every weight 0.5, no bias, input 1, zero state.
/// By hand: every pre-activation is 0.5, so i = f = o = sigmoid(0.5) = 0.6224593,
/// u = tanh(0.5) = 0.4621172; c = f * 0 + i * u = 0.2876491;
/// h = o * tanh(c) = 0.6224593 * 0.2799696 = 0.1742697.
#[test]
fn golden_single_unit_step() {
    let d = dev();
    for layout in [CellLayout::Gates, CellLayout::Fused] {
        let lstm = LstmConfig::new(1, 1)
            .with_layout(layout)
            .init_with(&mut Rng::new(0), &d);
        let lstm = map_params(lstm, |name, v| {
            let fill = if name.ends_with(".b") { 0.0 } else { 0.5 };
            v.zeros_like().add_scalar(fill)
        });
        let x = LstmInput::Dense(Tensor::from_data(TensorData::new(vec![1.0f32], [1, 1]), &d));
        let (out, state) = lstm.forward(&x, 1, LstmState::zeros(1, 1, &d));
        assert_close(&host(state.c), &[0.2876491], 1e-6, "c");
        assert_close(&host(out), &[0.1742697], 1e-6, "h");
    }
}

/// Copies the weights of a gates-layout layer into a fused one (columns i, f, u, o).
fn fused_from_gates(gates: &model::Lstm, device: &Device) -> model::Lstm {
    let mut parts: std::collections::BTreeMap<String, Vec<f32>> = Default::default();
    let mut dims: std::collections::BTreeMap<String, [usize; 2]> = Default::default();
    for_each_param(gates, |n, v| {
        dims.insert(n.to_string(), v.dims());
        parts.insert(n.to_string(), host(v));
    });
    let [d_in, h] = dims["blocks.0.wx"];
    let fused = LstmConfig::new(d_in, h)
        .with_layout(CellLayout::Fused)
        .init_with(&mut Rng::new(9), device);
    map_params(fused, |name, v| {
        let field = name.rsplit('.').next().unwrap();
        let rows = v.dims()[0];
        let mut data = Vec::with_capacity(rows * 4 * h);
        for r in 0..rows {
            for g in 0..4 {
                let p = &parts[&format!("blocks.{g}.{field}")];
                data.extend_from_slice(&p[r * h..(r + 1) * h]);
            }
        }
        Tensor::from_data(
            TensorData::new(data, [rows, 4 * h]),
            &device.clone().inner(),
        )
    })
}

#[test]
fn gates_and_fused_layouts_agree_in_outputs_and_gradients() {
    let d = dev();
    let gates = LstmConfig::new(5, 7)
        .with_layout(CellLayout::Gates)
        .with_init(InitScheme::Notebook)
        .init_with(&mut Rng::new(2), &d);
    let fused = fused_from_gates(&gates, &d);
    let x: Vec<f32> = (0..4 * 3 * 5)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0)
        .collect();
    let run = |m: &model::Lstm| {
        let input = LstmInput::Dense(Tensor::from_data(TensorData::new(x.clone(), [12, 5]), &d));
        let (out, st) = m.forward(&input, 3, LstmState::zeros(3, 7, &d));
        let loss = out.clone().sin().sum() + st.c.clone().sum();
        let grads = loss.backward();
        let mut g = std::collections::BTreeMap::new();
        for_each_param_grad(m, &grads, |n, _, grad| {
            g.insert(n.to_string(), host(grad.unwrap()));
        });
        (host(out), g)
    };
    let (out_g, grads_g) = run(&gates);
    let (out_f, grads_f) = run(&fused);
    assert_close(&out_g, &out_f, 1e-6, "outputs");
    // the fused gradient is the four gate gradients side by side
    for field in ["wx", "wh", "b"] {
        let f = &grads_f[&format!("blocks.0.{field}")];
        let rows = f.len() / 28;
        for g in 0..4 {
            let part = &grads_g[&format!("blocks.{g}.{field}")];
            let cols: Vec<f32> = (0..rows)
                .flat_map(|r| f[r * 28 + g * 7..r * 28 + (g + 1) * 7].to_vec())
                .collect();
            assert_close(part, &cols, 1e-5, &format!("gradient of {field}, gate {g}"));
        }
    }
}

/// Differential test against `burn::nn::Lstm` with copied weights (its second
/// bias per gate set to zero, as the notebook has one).
#[test]
fn matches_burn_nn_lstm_with_copied_weights() {
    let d = dev();
    let (d_in, h, batch, steps) = (6, 5, 2, 4);
    let ours = LstmConfig::new(d_in, h)
        .with_layout(CellLayout::Gates)
        .init_with(&mut Rng::new(4), &d);
    let mut w: std::collections::BTreeMap<String, Tensor<2>> = Default::default();
    for_each_param(&ours, |n, v| {
        w.insert(n.to_string(), v);
    });
    // leaves on the autodiff device, like freshly initialised parameters
    let leaf = |t: Tensor<2>| Tensor::<2>::from_data(t.into_data(), &d);
    let linear = |weight: &Tensor<2>, bias: Option<&Tensor<2>>| Linear {
        weight: Param::from_tensor(leaf(weight.clone())),
        bias: Some(Param::from_tensor(match bias {
            Some(b) => leaf(b.clone()).reshape([h]),
            None => Tensor::zeros([h], &d),
        })),
    };
    let mut theirs = BurnLstmConfig::new(d_in, h, true).init(&d);
    // burn's gates: input, forget, output, cell; ours: blocks 0..4 = i, f, u (cell), o
    for (gate, k) in [
        (&mut theirs.input_gate, 0),
        (theirs.forget_gate.as_mut().unwrap(), 1),
        (&mut theirs.cell_gate, 2),
        (&mut theirs.output_gate, 3),
    ] {
        gate.input_transform = linear(
            &w[&format!("blocks.{k}.wx")],
            Some(&w[&format!("blocks.{k}.b")]),
        );
        gate.hidden_transform = linear(&w[&format!("blocks.{k}.wh")], None);
    }
    let x: Vec<f32> = (0..batch * steps * d_in)
        .map(|i| ((i * 53 % 17) as f32 - 8.0) / 8.0)
        .collect();
    // ours: time-major rows; theirs: [batch, steps, d_in]
    let x_bt = Tensor::<3>::from_data(TensorData::new(x.clone(), [batch, steps, d_in]), &d);
    let x_tb = x_bt.clone().swap_dims(0, 1).reshape([steps * batch, d_in]);
    let (out, st) = ours.forward(
        &LstmInput::Dense(x_tb),
        batch,
        LstmState::zeros(batch, h, &d),
    );
    let (their_out, their_st) = theirs.forward(x_bt, None);
    let their_out = their_out.swap_dims(0, 1).reshape([steps * batch, h]);
    assert_close(
        &host(out.clone()),
        &host(their_out.clone()),
        1e-6,
        "outputs",
    );
    assert_close(
        &host(st.c.clone()),
        &host(their_st.cell),
        1e-6,
        "cell state",
    );
    // and the gradients of the input weights of the forget gate
    let g1 = out.powf_scalar(2.0).sum().backward();
    let g2 = their_out.powf_scalar(2.0).sum().backward();
    let mut ours_g = vec![];
    for_each_param_grad(&ours, &g1, |n, _, g| {
        if n == "blocks.1.wx" {
            ours_g = host(g.unwrap());
        }
    });
    let theirs_g = theirs
        .forget_gate
        .as_ref()
        .unwrap()
        .input_transform
        .weight
        .val()
        .grad(&g2)
        .unwrap();
    assert_close(
        &ours_g,
        &host(theirs_g),
        1e-5,
        "forget-gate input weight gradient",
    );
}

#[test]
fn every_parameter_gets_a_gradient() {
    let d = dev();
    for input in [InputKind::OneHot, InputKind::Embedding] {
        let m = CharLmConfig::new(27, 27)
            .with_input(input)
            .with_n_layers(2)
            .with_d_hidden(8)
            .with_d_embedding(4)
            .init(3, &d);
        let x = ids(&[1, 2, 3, 4, 5, 6, 7, 8], &d);
        let (logits, _) = m.forward(x, 2, m.zero_state(2, &d), true);
        let grads = logits.sum().backward();
        let mut n = 0;
        for_each_param_grad(&m, &grads, |name, _, g| {
            let g = host(g.unwrap_or_else(|| panic!("{name} has no gradient")));
            assert!(g.iter().any(|v| *v != 0.0), "{name}: zero gradient");
            n += 1;
        });
        assert_eq!(
            n,
            if input == InputKind::OneHot {
                2 + 2 * 3
            } else {
                3 + 2 * 3
            }
        );
    }
}

/// A two-layer model (the second layer's input dense: `large`'s shape,
/// scaled down to 32 sequences of 32 units) with its products in bf16 or
/// fp16: the logits and every gradient close to f32's, and different from
/// them where this CPU has the format's instructions (so that the 16-bit
/// products did run); the same as f32 where
/// it has not, and it says so. A batch of 2 sequences, under the 4 rows a
/// 16-bit product needs, runs f32 throughout, the dense layer too.
#[test]
#[allow(clippy::print_stderr)] // says when this CPU cannot run a format
fn half_precision_models_stay_close_to_f32() {
    use model::kernel::Half;
    let d = dev();
    let m = CharLmConfig::new(27, 27)
        .with_input(InputKind::Embedding)
        .with_n_layers(2)
        .with_d_hidden(32)
        .with_d_embedding(16)
        .with_layout(CellLayout::Fused)
        .init(5, &d);
    let steps = 4;
    let run_batch = |m: &model::CharLm, batch: usize| {
        let x: Vec<i64> = (0..batch * steps).map(|i| (i * 7 % 27) as i64).collect();
        let (logits, _) = m.forward(ids(&x, &d), batch, m.zero_state(batch, &d), true);
        let grads = (logits.clone() * logits.clone()).sum().backward();
        let mut all = vec![("logits".to_string(), host(logits))];
        for_each_param_grad(m, &grads, |name, _, g| {
            all.push((name.to_string(), host(g.expect("a gradient"))));
        });
        all
    };
    let run = |m: &model::CharLm| run_batch(m, 32);
    let f32_run = run(&m);
    for half in [Half::Bf16, Half::F16] {
        let in_half = m.clone().with_precision(half.precision());
        assert!(
            run_batch(&in_half, 2) == run_batch(&m, 2),
            "{half:?} with 2 rows: not f32 throughout"
        );
        let got = run(&in_half);
        let mut differs = false;
        for ((name, want), (_, got)) in f32_run.iter().zip(&got) {
            let scale = want.iter().fold(0f32, |s, v| s.max(v.abs()));
            assert_close(
                got,
                want,
                2e-2 * scale.max(1e-6),
                &format!("{half:?} {name}"),
            );
            differs |= got != want;
        }
        assert_eq!(differs, half.available(), "{half:?} ran where available");
        if !half.available() {
            eprintln!("half_precision_models_stay_close_to_f32: no {half:?} instructions here");
        }
    }
}

#[test]
fn dropout_is_off_in_evaluation_and_scales_in_training() {
    let d = dev();
    let x = Tensor::<2>::ones([200, 50], &d);
    let drop = Dropout::new(0.75);
    assert_eq!(host(drop.forward(x.clone(), false)), host(x.clone()));
    d.seed(7);
    let y = host(drop.forward(x.clone(), true));
    let kept = y.iter().filter(|v| **v != 0.0).count() as f64 / y.len() as f64;
    assert!((kept - 0.75).abs() < 0.02, "kept {kept}");
    assert!(
        y.iter()
            .all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6)
    );
    d.seed(7);
    assert_eq!(
        host(drop.forward(x.clone(), true)),
        y,
        "same seed, same mask"
    );
    assert_eq!(host(Dropout::new(1.0).forward(x.clone(), true)), host(x));
    // the model: evaluation is deterministic, training with dropout is not
    let m = CharLmConfig::new(27, 27)
        .with_input(InputKind::Embedding)
        .with_keep_prob(0.5)
        .with_d_hidden(8)
        .init(1, &d);
    let run = |train: bool| {
        host(
            m.forward(ids(&[1, 2, 3, 4], &d), 2, m.zero_state(2, &d), train)
                .0,
        )
    };
    assert_eq!(run(false), run(false));
    assert_ne!(run(true), run(true));
}

/// DropConnect on the recurrent weights: off in evaluation; in training one
/// mask per forward pass, so the gradient of a dropped weight is exactly zero
/// (about `1 - p` of them) and the same seed drops the same weights.
#[test]
fn recurrent_dropconnect_drops_weights_in_training_only() {
    let d = dev();
    let config = CharLmConfig::new(27, 27)
        .with_input(InputKind::Embedding)
        .with_d_embedding(8)
        .with_d_hidden(16);
    let plain = config.clone().init(4, &d);
    let dropped = config.with_recurrent_keep_prob(0.5).init(4, &d);
    let x = || ids(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], &d);
    let logits = |m: &model::CharLm, train: bool| m.forward(x(), 2, m.zero_state(2, &d), train).0;
    assert_eq!(host(logits(&dropped, false)), host(logits(&plain, false)));
    // the fraction of recurrent weights whose gradient is exactly zero
    let zero_grads = |m: &model::CharLm, seed: u64| {
        d.seed(seed);
        let grads = logits(m, true).sum().backward();
        let g = host(model::params::named_grads(m, &grads)["layers.0.blocks.0.wh"].clone());
        (
            g.iter().filter(|v| **v == 0.0).count() as f64 / g.len() as f64,
            g,
        )
    };
    let (none, _) = zero_grads(&plain, 9);
    assert!(
        none < 0.01,
        "without DropConnect {none} of the gradients are zero"
    );
    let (half, g) = zero_grads(&dropped, 9);
    assert!(
        (half - 0.5).abs() < 0.06,
        "{half} of 1024 recurrent gradients are zero"
    );
    assert_eq!(zero_grads(&dropped, 9).1, g, "same seed, same mask");
    assert_ne!(zero_grads(&dropped, 10).1, g, "another seed, another mask");
}

/// One-hot rows (looked up in the projected table inside the sequence
/// operation on flex, ids repeated) against the dense one-hot product: the
/// outputs and the gradients of every parameter (the table's gradient
/// summed from its rows').
#[test]
fn one_hot_input_equals_a_dense_one_hot_matmul() {
    let d = dev();
    let lstm = LstmConfig::new(27, 6).init_with(&mut Rng::new(1), &d);
    let v = [3i64, 0, 26, 3, 5, 0];
    let mut onehot = vec![0f32; v.len() * 27];
    for (r, &c) in v.iter().enumerate() {
        onehot[r * 27 + c as usize] = 1.0;
    }
    let run = |input: LstmInput| {
        let (out, st) = lstm.forward(&input, 2, LstmState::zeros(2, 6, &d));
        let grads = (out.clone().sin().sum() + st.c.sum()).backward();
        let mut g = vec![];
        for_each_param_grad(&lstm, &grads, |_, _, grad| g.push(host(grad.unwrap())));
        (host(out), g)
    };
    let (a, grads_a) = run(LstmInput::OneHot(ids(&v, &d)));
    let dense = Tensor::from_data(TensorData::new(onehot, [v.len(), 27]), &d);
    let (b, grads_b) = run(LstmInput::Dense(dense));
    assert_close(&a, &b, 1e-6, "one-hot");
    assert_eq!(grads_a.len(), grads_b.len());
    for (k, (x, y)) in grads_a.iter().zip(&grads_b).enumerate() {
        assert_close(x, y, 1e-5, &format!("gradient {k}"));
    }
}

#[test]
fn embedded_input_equals_looking_up_then_projecting() {
    // the projected-table path (vocab 4 <= 12 rows) and the row-by-row path
    // (vocab 16 > 12 rows) against the plain lookup then product, in outputs
    // and in the gradients of the layer and of the table
    let d = dev();
    for (vocab, layout) in [
        (4usize, CellLayout::Fused),
        (4, CellLayout::Gates),
        (16, CellLayout::Fused),
    ] {
        let lstm = LstmConfig::new(5, 6)
            .with_layout(layout)
            .with_init(InitScheme::Notebook)
            .init_with(&mut Rng::new(3), &d);
        let values: Vec<f32> = (0..vocab * 5)
            .map(|i| ((i * 29 % 13) as f32 - 6.0) / 6.0)
            .collect();
        let v: Vec<i64> = (0..12).map(|i| (i * 7 % vocab) as i64).collect();
        let run = |embedded: bool| {
            let table = Param::from_tensor(Tensor::<2>::from_data(
                TensorData::new(values.clone(), [vocab, 5]),
                &d,
            ));
            let input = if embedded {
                LstmInput::Embedded {
                    table: table.val(),
                    ids: ids(&v, &d),
                }
            } else {
                LstmInput::Dense(table.val().select(0, ids(&v, &d)))
            };
            let (out, st) = lstm.forward(&input, 3, LstmState::zeros(3, 6, &d));
            let grads = (out.clone().sin().sum() + st.c.sum()).backward();
            let mut g = vec![host(table.val().grad(&grads).unwrap())];
            for_each_param_grad(&lstm, &grads, |_, _, grad| g.push(host(grad.unwrap())));
            (host(out), g)
        };
        let (out_e, grads_e) = run(true);
        let (out_d, grads_d) = run(false);
        assert_close(&out_e, &out_d, 1e-6, "outputs");
        assert_eq!(grads_e.len(), grads_d.len());
        for (k, (a, b)) in grads_e.iter().zip(&grads_d).enumerate() {
            assert_close(
                a,
                b,
                1e-5,
                &format!("gradient {k} (vocab {vocab}, {layout:?})"),
            );
        }
    }
}

#[test]
fn notebook_init_draws_from_the_notebook_distribution() {
    let m = CharLmConfig::new(729, 27)
        .with_input(InputKind::Embedding)
        .with_init(InitScheme::Notebook)
        .init(0, &Device::flex());
    for_each_param(&m, |name, v| {
        let x = host(v);
        match name {
            "embedding" => assert!(x.iter().all(|v| (-1.0..1.0).contains(v))),
            n if n.ends_with(".b") || n == "b" => assert!(x.iter().all(|v| *v == 0.0), "{n}"),
            n => assert!(x.iter().all(|v| (-0.3..=0.1).contains(v)), "{n}"),
        }
    });
    let _ = m.valid();
}

/// The fused sequence operation (hand-written backward) against the same
/// computation in plain Burn operations: outputs and the gradients of all
/// four inputs (projections, recurrent weights, initial output and cell),
/// at a size only the portable loops take and at one that takes the CPU's
/// fast paths (16 sequences and 16 units: blocked and packed products,
/// the 16-lane cell step).
#[test]
fn fused_sequence_matches_reference_operations() {
    for (steps, batch, h) in [(5, 3, 4), (5, 16, 16)] {
        fused_sequence_against_reference(steps, batch, h);
    }
}

fn fused_sequence_against_reference(steps: usize, batch: usize, h: usize) {
    let d = dev();
    let lstm = LstmConfig::new(2, h).init_with(&mut Rng::new(8), &d);
    let leaf = |n: usize, cols: usize, k: usize| -> Tensor<2> {
        let v: Vec<f32> = (0..n * cols)
            .map(|i| (((i + k) * 29 % 23) as f32 - 11.0) / 10.0)
            .collect();
        Tensor::<2>::from_data(TensorData::new(v, [n, cols]), &d).require_grad()
    };
    let run = |fused: bool| {
        let p = leaf(steps * batch, 4 * h, 1);
        let h0 = leaf(batch, h, 2);
        let c0 = leaf(batch, h, 3);
        let state = LstmState {
            h: h0.clone(),
            c: c0.clone(),
        };
        let (out, st) = if fused {
            lstm.forward_projected(p.clone(), batch, state)
        } else {
            lstm.forward_reference(p.clone(), batch, state)
        };
        let loss = out.clone().sin().sum() + st.c.clone().cos().sum() + st.h.clone().sum();
        let grads = loss.backward();
        let mut g = vec![host(out), host(st.c), host(st.h)];
        for t in [&p, &h0, &c0] {
            g.push(host(t.grad(&grads).unwrap()));
        }
        // only the recurrent weights enter after the projection
        for_each_param_grad(&lstm, &grads, |name, _, grad| {
            assert_eq!(grad.is_some(), name.ends_with("wh"), "{name}");
            if let Some(grad) = grad {
                g.push(host(grad));
            }
        });
        g
    };
    let (a, b) = (run(true), run(false));
    assert_eq!(a.len(), 7);
    let names = [
        "outputs", "final c", "final h", "d p", "d h0", "d c0", "d wh",
    ];
    for (k, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_close(x, y, 2e-5, &format!("{batch}x{h}: {}", names[k]));
    }
    assert!(model::flex_ops::supported(&d));
}

/// The vectorised `tanh` operation against Burn's: values from -30 to 30
/// (a length no vector width divides, so the tail is covered too), and the
/// gradient of a weighted sum through it.
#[test]
fn fast_tanh_matches_burn_tanh() {
    let d = dev();
    let v: Vec<f32> = (0..1203).map(|i| (i as f32 - 601.0) / 20.0).collect();
    let weights: Vec<f32> = (0..1203)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
        .collect();
    let run = |fast: bool| {
        let x = Tensor::<2>::from_data(TensorData::new(v.clone(), [3, 401]), &d).require_grad();
        let w = Tensor::<2>::from_data(TensorData::new(weights.clone(), [3, 401]), &d);
        let y = if fast {
            model::flex_ops::tanh(x.clone())
        } else {
            x.clone().tanh()
        };
        let grads = (y.clone() * w).sum().backward();
        (host(y), host(x.grad(&grads).unwrap()))
    };
    let ((y, dy), (want_y, want_dy)) = (run(true), run(false));
    assert_close(&y, &want_y, 5e-7, "tanh");
    assert_close(&dy, &want_dy, 2e-6, "d tanh");
    // a diverged value stays visible
    let nan = Tensor::<2>::from_data(TensorData::new(vec![f32::NAN, 0.5], [1, 2]), &d);
    let y = host(model::flex_ops::tanh(nan));
    assert!(
        y[0].is_nan() && (y[1] - 0.5f32.tanh()).abs() < 1e-6,
        "{y:?}"
    );
}

/// The rows operation against Burn's `narrow`: values and the gradient of
/// weighted sums of overlapping row ranges (first rows, middle rows, last
/// rows), one of them through a transposed view (a strided gradient).
#[test]
fn take_rows_matches_burn_narrow() {
    let d = dev();
    let (rows, width) = (9, 5);
    let v: Vec<f32> = (0..rows * width).map(|i| (i as f32 - 20.0) / 7.0).collect();
    let run = |fast: bool| {
        let x =
            Tensor::<2>::from_data(TensorData::new(v.clone(), [rows, width]), &d).require_grad();
        let take = |start, len| {
            if fast {
                model::flex_ops::take_rows(x.clone(), start, len)
            } else {
                x.clone().narrow(0, start, len)
            }
        };
        let (a, b, c) = (take(0, 4), take(3, 3), take(7, 2));
        let wa = Tensor::<2>::from_data(
            TensorData::new(
                (0..20).map(|i| i as f32 / 9.0).collect::<Vec<f32>>(),
                [4, 5],
            ),
            &d,
        );
        // the middle rows' gradient through a transposed view: strided, and
        // not uniform, so a wrong order of its values shows
        let wb = Tensor::<2>::from_data(
            TensorData::new(
                (0..15).map(|i| i as f32 - 4.0).collect::<Vec<f32>>(),
                [5, 3],
            ),
            &d,
        );
        let loss = (a.clone() * wa).sum()
            + (b.clone().swap_dims(0, 1) * wb).sum()
            + c.clone().powf_scalar(2.0).sum();
        let grads = loss.backward();
        (host(a), host(b), host(c), host(x.grad(&grads).unwrap()))
    };
    let (got, want) = (run(true), run(false));
    assert_eq!(got.0, want.0, "first rows");
    assert_eq!(got.1, want.1, "middle rows");
    assert_eq!(got.2, want.2, "last rows");
    assert_close(&got.3, &want.3, 1e-6, "gradient");
    // the middle rows' gradient is the only one on row 5 (row 2 of the
    // middle rows: column 2 of the transposed weights)
    let want5: Vec<f32> = (0..5).map(|i| (i * 3 + 2) as f32 - 4.0).collect();
    assert_eq!(&got.3[5 * width..6 * width], &want5[..]);
}

/// The dense layer operation against `x.matmul(w) + b` in Burn operations:
/// the output and the gradients of `x`, `w` and `b`, at an odd size and at
/// the dropout recipe's (640 rows of 128 to 256), `x` a transposed view
/// (the operation copies a strided operand before its products) and part
/// of the output's gradient through one.
#[test]
fn dense_layer_matches_burn_operations() {
    let d = dev();
    for (rows, d_in, d_out) in [(7, 3, 5), (640, 128, 256)] {
        let leaf = |r: usize, c: usize, k: usize| {
            let v: Vec<f32> = (0..r * c)
                .map(|i| (((i + k) * 37 % 29) as f32 - 14.0) / 20.0)
                .collect();
            Tensor::<2>::from_data(TensorData::new(v, [r, c]), &d).require_grad()
        };
        let run = |fast: bool| {
            let (xt, w, b) = (leaf(d_in, rows, 1), leaf(d_in, d_out, 2), leaf(1, d_out, 3));
            let x = xt.clone().swap_dims(0, 1);
            let y = if fast {
                model::flex_linear::linear(x, w.clone(), b.clone(), model::Precision::F32)
            } else {
                x.matmul(w.clone()) + b.clone()
            };
            // part of the output's gradient through a transposed view, so
            // that it may arrive strided
            let wt = leaf(d_out, rows, 4);
            let loss = y.clone().sin().sum() + (y.clone().swap_dims(0, 1) * wt).sum();
            let grads = loss.backward();
            [
                host(y),
                host(xt.grad(&grads).unwrap()),
                host(w.grad(&grads).unwrap()),
                host(b.grad(&grads).unwrap()),
            ]
        };
        let (got, want) = (run(true), run(false));
        for (k, name) in ["output", "d x", "d w", "d b"].iter().enumerate() {
            assert_close(
                &got[k],
                &want[k],
                1e-4,
                &format!("{rows}x{d_in}->{d_out}: {name}"),
            );
        }
    }
}

/// The fused classifier + softmax cross-entropy against the same computation in Burn operations.
#[test]
fn fused_cross_entropy_matches_reference_operations() {
    let d = dev();
    let leaf = |r: usize, c: usize, k: usize| {
        let v: Vec<f32> = (0..r * c)
            .map(|i| (((i + k) * 31 % 19) as f32 - 9.0) / 7.0)
            .collect();
        Tensor::<2>::from_data(TensorData::new(v, [r, c]), &d).require_grad()
    };
    let run = |fused: bool| {
        let (h, w, b) = (leaf(6, 4, 1), leaf(4, 27, 2), leaf(1, 27, 3));
        let labels = ids(&[0, 26, 3, 3, 9, 1], &d);
        let loss = if fused {
            model::flex_ops::linear_cross_entropy(h.clone(), w.clone(), b.clone(), labels)
        } else {
            model::cross_entropy(h.clone().matmul(w.clone()) + b.clone(), labels)
        };
        let grads = loss.clone().mul_scalar(2.0).backward();
        let mut out = vec![host(loss)];
        for t in [&h, &w, &b] {
            out.push(host(t.grad(&grads).unwrap()));
        }
        out
    };
    let (a, b) = (run(true), run(false));
    for (k, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_close(x, y, 1e-5, ["loss", "d h", "d w", "d b"][k]);
    }
}

/// The host-side stepping model (generation on the CPU) gives the same logits
/// as the tensor forward pass, step after step, for every input kind, both
/// cell layouts and several layers.
#[test]
fn host_stepping_matches_the_tensor_forward_pass() {
    let d = Device::flex();
    for (input, vocab, layers, layout) in [
        (InputKind::OneHot, 27, 1, CellLayout::Gates),
        (InputKind::OneHot, 27, 2, CellLayout::Fused),
        (InputKind::Embedding, 27, 1, CellLayout::Fused),
        (InputKind::Embedding, 729, 3, CellLayout::Gates),
    ] {
        let m = CharLmConfig::new(vocab, 27)
            .with_input(input)
            .with_n_layers(layers)
            .with_layout(layout)
            .with_d_hidden(12)
            .with_d_embedding(6)
            .init(7, &d);
        let lm = model::host::HostLm::new(&m);
        assert_eq!((lm.vocab_in(), lm.vocab_out()), (vocab, 27));
        let (batch, steps) = (3, 5);
        let seq: Vec<i64> = (0..(batch * steps) as i64)
            .map(|i| (i * 37 + 11) % vocab as i64)
            .collect();
        let (logits, _) = m.forward(ids(&seq, &d), batch, m.zero_state(batch, &d), false);
        let want = host(logits);
        let mut state = lm.zero_state(batch);
        let mut out = Vec::new();
        for t in 0..steps {
            let step: Vec<usize> = seq[t * batch..(t + 1) * batch]
                .iter()
                .map(|&i| i as usize)
                .collect();
            lm.step(&step, &mut state, &mut out);
            assert_close(
                &out,
                &want[t * batch * 27..(t + 1) * batch * 27],
                1e-5,
                &format!("{input:?} x{layers} {layout:?} step {t}"),
            );
        }
    }
}

/// `buffer::values` reads a flex tensor's buffer directly: it must give what
/// `into_data` gives for tensors whose buffer is not simply their values
/// (a transposed view, a narrowed one with an offset) and for tensors that
/// autodiff tracks, on both devices.
#[test]
fn host_values_equal_into_data_for_views_and_tracked_tensors() {
    let v: Vec<f32> = (0..35).map(|i| i as f32 * 0.5 - 3.0).collect();
    for d in [Device::flex(), dev()] {
        let t = Tensor::<2>::from_data(TensorData::new(v.clone(), [5, 7]), &d);
        let mut cases = vec![
            ("plain", t.clone()),
            ("transposed", t.clone().transpose()),
            ("narrowed", t.clone().narrow(0, 2, 3)),
            ("narrowed columns", t.clone().narrow(1, 1, 4)),
        ];
        if t.is_autodiff() {
            cases.push(("tracked", t.clone().require_grad()));
            cases.push(("computed", t.clone().require_grad().mul_scalar(2.0)));
        }
        for (what, case) in cases {
            let want = host(case.clone());
            assert_eq!(model::buffer::values(case), want, "{what}");
        }
    }
}

/// `buffer::update_values` changes a tensor's own buffer only where nothing
/// else holds it: in place on flex for a tensor held by nothing else (its
/// buffer stays where it was), also for a narrowed view that starts inside
/// its buffer; on a copy for a tensor held elsewhere too (as autodiff's
/// graph may hold a parameter; the other holder keeps its values), a
/// transposed view, or a tracked one. `with_values` reads what `values` reads.
#[test]
fn buffer_update_values_never_changes_another_holder() {
    let v: Vec<f32> = (0..35).map(|i| i as f32 * 0.5 - 3.0).collect();
    let plus_one = |x: &mut [f32]| x.iter_mut().for_each(|x| *x += 1.0);
    let address = |t: &Tensor<2>| model::buffer::with_values(t, |s| s.as_ptr() as usize);
    for d in [Device::flex(), dev()] {
        let t = Tensor::<2>::from_data(TensorData::new(v.clone(), [5, 7]), &d);
        let fresh = || t.clone().mul_scalar(1.0);
        // (what, tensor, held elsewhere too, updated in place)
        let mut cases = vec![
            ("alone", fresh(), false, !d.is_autodiff()),
            (
                "alone narrowed",
                fresh().narrow(0, 2, 3),
                false,
                !d.is_autodiff(),
            ),
            ("alone transposed", fresh().transpose(), false, false),
            ("shared", t.clone(), true, false),
            ("transposed", t.clone().transpose(), true, false),
            ("narrowed", t.clone().narrow(0, 2, 3), true, false),
        ];
        if t.is_autodiff() {
            cases.push(("tracked", t.clone().require_grad(), true, false));
        }
        for (what, case, held, in_place) in cases {
            let before = host(case.clone());
            let other = held.then(|| case.clone());
            let read = model::buffer::with_values(&case, <[f32]>::to_vec);
            assert_eq!(read, before, "{what}");
            let at = address(&case);
            let updated = model::buffer::update_values(case, plus_one);
            if in_place {
                assert_eq!(address(&updated), at, "{what}: updated in place");
            }
            let want: Vec<f32> = before.iter().map(|x| x + 1.0).collect();
            assert_eq!(host(updated), want, "{what}");
            if let Some(other) = other {
                assert_eq!(host(other), before, "{what}: the other holder's values");
            }
        }
        assert_eq!(host(t), v, "the original tensor");
    }
}
