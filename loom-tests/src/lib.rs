//! Only the models in `tests/` matter; they run under `RUSTFLAGS="--cfg loom"`.
