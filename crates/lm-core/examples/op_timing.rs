//! Times the tensor ops of one decoder forward on the current device (profiling aid).
//! Run: `cargo run --release -p lm-core --example op_timing`
use burn::tensor::{
    Distribution, Tensor, TensorData,
    activation::{log_softmax, silu},
};
use std::time::Instant;

fn main() {
    let dev =
        lm_core::device::device_from_name(&std::env::var("DEV").unwrap_or("cpu".into())).unwrap();
    let t = |name: &str, f: &dyn Fn() -> Tensor<3>| {
        let _ = f().into_data();
        let s = Instant::now();
        let n = 5;
        for _ in 0..n {
            let _ = f().into_data();
        }
        println!(
            "{name:30} {:8.2} ms",
            s.elapsed().as_secs_f64() * 1000.0 / n as f64
        );
    };
    let x = Tensor::<3>::random([8, 256, 576], Distribution::Default, &dev);
    let w = Tensor::<2>::random([576, 1536], Distribution::Default, &dev);
    let w2 = Tensor::<2>::random([1536, 576], Distribution::Default, &dev);
    let head = Tensor::<2>::random([576, 49152], Distribution::Default, &dev);
    t("linear 2048x576x1536", &|| {
        burn::tensor::module::linear(x.clone(), w.clone(), None)
    });
    t("matmul 3d x 2d", &|| {
        x.clone().matmul(w.clone().unsqueeze_dim(0))
    });
    t("reshape 2d matmul", &|| {
        x.clone()
            .reshape([2048, 576])
            .matmul(w.clone())
            .reshape([8, 256, 1536])
    });
    let h = Tensor::<3>::random([8, 256, 1536], Distribution::Default, &dev);
    t("linear 2048x1536x576", &|| {
        burn::tensor::module::linear(h.clone(), w2.clone(), None)
    });
    t("silu*mul 8x256x1536", &|| silu(h.clone()) * h.clone());
    t("mul only", &|| h.clone() * h.clone());
    t("silu only", &|| silu(h.clone()));
    t("sigmoid only", &|| {
        burn::tensor::activation::sigmoid(h.clone())
    });
    t("exp only", &|| h.clone().exp());
    t("rmsnorm-ish", &|| {
        let ms = x.clone().square().mean_dim(2);
        x.clone() * (ms + 1e-5).sqrt().recip()
    });
    let q = Tensor::<4>::random([8, 9, 256, 64], Distribution::Default, &dev);
    t("attention causal", &|| {
        burn::tensor::module::attention(
            q.clone(),
            q.clone(),
            q.clone(),
            None,
            None,
            burn::tensor::ops::AttentionModuleOptions {
                is_causal: true,
                ..Default::default()
            },
        )
        .reshape([8, 9 * 256, 64])
    });
    t("swap_dims+reshape", &|| {
        q.clone().swap_dims(1, 2).reshape([8, 256, 576])
    });
    t("lm head linear", &|| {
        burn::tensor::module::linear(x.clone(), head.clone(), None)
    });
    let logits = Tensor::<3>::random([8, 256, 49152], Distribution::Default, &dev);
    t("log_softmax", &|| log_softmax(logits.clone(), 2));
    let x1 = Tensor::<3>::random([1, 1, 576], Distribution::Default, &dev);
    t("gemv 576x1536", &|| {
        burn::tensor::module::linear(x1.clone(), w.clone(), None)
    });
    t("gemv head", &|| {
        burn::tensor::module::linear(x1.clone(), head.clone(), None)
    });
    // Backward of a frozen linear: dX = dY · Wᵀ (a transposed view) vs a contiguous copy of Wᵀ.
    let dy = Tensor::<3>::random([4, 128, 1536], Distribution::Default, &dev);
    let w_t = w.clone().transpose(); // [1536, 576] view of [576, 1536]
    let w_t_copy = Tensor::<2>::from_data(w_t.clone().into_data(), &dev);
    t("dY·Wᵀ transposed view 512x1536x576", &|| {
        dy.clone().matmul(w_t.clone().unsqueeze_dim(0))
    });
    t("dY·Wᵀ contiguous 512x1536x576", &|| {
        dy.clone().matmul(w_t_copy.clone().unsqueeze_dim(0))
    });
    // Fused projections: one matmul against concatenated weights vs separate ones.
    let w_gu = Tensor::<2>::random([576, 3072], Distribution::Default, &dev);
    t("gate+up separate 2048x576x1536 x2", &|| {
        burn::tensor::module::linear(x.clone(), w.clone(), None)
            + burn::tensor::module::linear(x.clone(), w.clone(), None)
    });
    t("gate|up fused 2048x576x3072", &|| {
        burn::tensor::module::linear(x.clone(), w_gu.clone(), None).narrow(2, 0, 1536)
    });
    let wq = Tensor::<2>::random([576, 576], Distribution::Default, &dev);
    let wkv = Tensor::<2>::random([576, 192], Distribution::Default, &dev);
    let w_qkv = Tensor::<2>::random([576, 960], Distribution::Default, &dev);
    t("q,k,v separate gemv", &|| {
        let q = burn::tensor::module::linear(x1.clone(), wq.clone(), None);
        let k = burn::tensor::module::linear(x1.clone(), wkv.clone(), None);
        let v = burn::tensor::module::linear(x1.clone(), wkv.clone(), None);
        q.narrow(2, 0, 192) + k + v
    });
    t("qkv fused gemv", &|| {
        burn::tensor::module::linear(x1.clone(), w_qkv.clone(), None).narrow(2, 0, 192)
    });
    // The fused kernels against the burn compositions (scoring shapes).
    let g = Tensor::<1>::random([576], Distribution::Default, &dev);
    t("kernel swiglu 8x256x1536", &|| {
        lm_core::kernels::swiglu::swiglu(h.clone(), h.clone())
    });
    t("kernel rms_norm 8x256x576", &|| {
        lm_core::kernels::norm::rms_norm(x.clone(), g.clone(), 1e-5, false)
    });
    t("burn rms_norm 8x256x576", &|| {
        lm_core::kernels::norm::rms_norm_reference(x.clone(), g.clone(), 1e-5, false)
    });
    let _ = TensorData::new(vec![0f32], [1]);
}
