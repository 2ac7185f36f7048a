//! Build the notebook's character LSTM inside your own Burn program, run it
//! over a batch and take one gradient.
//!
//! `cargo run -p model --example char_lm`

#![allow(clippy::print_stdout)]

use burn::tensor::Device;
use model::{CellLayout, CharLmConfig, InitScheme, ids_tensor};

fn main() {
    let device = Device::flex().autodiff();
    // 27 characters in, 27 out, 64 units, the notebook's four gate matrices
    let config = CharLmConfig::new(27, 27)
        .with_d_hidden(64)
        .with_layout(CellLayout::Gates)
        .with_init(InitScheme::Notebook);
    let model = config.init(1, &device);
    let (steps, batch) = (10, 4);
    // time-major ids: row t * batch + b
    let inputs: Vec<i64> = (0..steps * batch).map(|i| (i % 27) as i64).collect();
    let labels: Vec<i64> = (0..steps * batch).map(|i| ((i + 1) % 27) as i64).collect();
    let state = model.zero_state(batch, &device);
    let (hidden, _state) = model.forward_hidden(ids_tensor(inputs, &device), batch, state, true);
    let loss = model.loss(hidden, ids_tensor(labels, &device), true);
    // Burn's autodiff: gradients of every parameter, by name
    let grads = loss.backward();
    let mut with_gradient = 0;
    model::params::for_each_param_grad(&model, &grads, |_name, _value, grad| {
        with_gradient += usize::from(grad.is_some())
    });
    let value = loss.into_data().try_into_vec_as::<f32>().expect("f32")[0];
    println!(
        "{} parameters in {} tensors ({with_gradient} with a gradient); loss {value:.4} \
         (an untrained model: about ln 27 = {:.4})",
        model::params::num_scalars(&model),
        model::params::param_shapes(&model).len(),
        27f32.ln()
    );
}
