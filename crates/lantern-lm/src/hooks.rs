//! Named hook points and the hooks that read, replace or add to activations during a forward pass.
//!
//! Names follow TransformerLens habits and are a stable contract (printed by `lantern lm info`):
//! `embed`, `blocks.{i}.resid_pre`, `blocks.{i}.attn_out`, `blocks.{i}.resid_mid`,
//! `blocks.{i}.mlp_act`, `blocks.{i}.mlp_out`, `blocks.{i}.resid_post`, `final_norm`, `logits`.
//! Every activation has shape `[batch, seq, width]`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use candle_core::{Result, Tensor};

/// A place in the forward pass where an activation can be read or changed.
///
/// The derived order is the order in which the forward pass reaches the points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// Token embeddings, before the first block.
    Embed,
    /// A point inside block `layer`.
    Block { layer: usize, site: BlockSite },
    /// The residual stream after the final normalisation.
    FinalNorm,
    /// The output logits.
    Logits,
}

/// The points inside one transformer block, in the order the pass reaches them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockSite {
    /// The residual stream entering the block.
    ResidPre,
    /// The attention output (after the output projection), added to the residual stream.
    AttnOut,
    /// `resid_pre + attn_out`. With a parallel residual (GPT-NeoX) the MLP reads `resid_pre`, not
    /// this, but `resid_post` is still `resid_mid + mlp_out`.
    ResidMid,
    /// The MLP hidden layer after the activation function (after the gate product for SwiGLU).
    MlpAct,
    /// The MLP output (after the down projection).
    MlpOut,
    /// The residual stream leaving the block.
    ResidPost,
}

impl BlockSite {
    const ALL: [BlockSite; 6] = [
        BlockSite::ResidPre,
        BlockSite::AttnOut,
        BlockSite::ResidMid,
        BlockSite::MlpAct,
        BlockSite::MlpOut,
        BlockSite::ResidPost,
    ];

    fn name(self) -> &'static str {
        match self {
            BlockSite::ResidPre => "resid_pre",
            BlockSite::AttnOut => "attn_out",
            BlockSite::ResidMid => "resid_mid",
            BlockSite::MlpAct => "mlp_act",
            BlockSite::MlpOut => "mlp_out",
            BlockSite::ResidPost => "resid_post",
        }
    }
}

impl HookPoint {
    /// Shorthand for a point inside a block.
    pub fn block(layer: usize, site: BlockSite) -> HookPoint {
        HookPoint::Block { layer, site }
    }

    /// Every hook point of a model with `n_layers` blocks, in pass order.
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        let mut v = vec![HookPoint::Embed];
        for layer in 0..n_layers {
            v.extend(
                BlockSite::ALL
                    .iter()
                    .map(|&site| HookPoint::Block { layer, site }),
            );
        }
        v.extend([HookPoint::FinalNorm, HookPoint::Logits]);
        v
    }

    /// The block this point belongs to, if any.
    pub fn layer(&self) -> Option<usize> {
        match self {
            HookPoint::Block { layer, .. } => Some(*layer),
            _ => None,
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookPoint::Embed => f.write_str("embed"),
            HookPoint::Block { layer, site } => write!(f, "blocks.{layer}.{}", site.name()),
            HookPoint::FinalNorm => f.write_str("final_norm"),
            HookPoint::Logits => f.write_str("logits"),
        }
    }
}

/// A hook point name that does not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown hook point {0:?} (expected embed, blocks.N.resid_pre|attn_out|resid_mid|mlp_act|mlp_out|resid_post, final_norm or logits)")]
pub struct BadHookPoint(pub String);

impl FromStr for HookPoint {
    type Err = BadHookPoint;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || BadHookPoint(s.to_string());
        match s {
            "embed" => return Ok(HookPoint::Embed),
            "final_norm" => return Ok(HookPoint::FinalNorm),
            "logits" => return Ok(HookPoint::Logits),
            _ => {}
        }
        let rest = s.strip_prefix("blocks.").ok_or_else(bad)?;
        let (layer, site) = rest.split_once('.').ok_or_else(bad)?;
        let layer: usize = layer.parse().map_err(|_| bad())?;
        let site = BlockSite::ALL
            .into_iter()
            .find(|x| x.name() == site)
            .ok_or_else(bad)?;
        Ok(HookPoint::Block { layer, site })
    }
}

impl serde::Serialize for HookPoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A function run at a hook point: gets the activation, may return a replacement. `Send`, because
/// a pass runs on the runtime's worker pool (see [`crate::model::Model::forward`]).
pub type HookFn<'a> = Box<dyn FnMut(&Tensor) -> Result<Option<Tensor>> + Send + 'a>;

/// The hooks for one forward pass: any number of points, any number of hooks per point.
///
/// Hooks at one point run in the order they were added; each sees the previous one's result.
#[derive(Default)]
pub struct Hooks<'a> {
    fns: BTreeMap<HookPoint, Vec<HookFn<'a>>>,
    reads: BTreeSet<HookPoint>,
    captured: BTreeMap<HookPoint, Tensor>,
    stop_early: bool,
}

impl<'a> Hooks<'a> {
    /// No hooks: a plain forward pass.
    pub fn new() -> Self {
        Self::default()
    }

    /// Captures the activation at `point` (after any earlier hook at that point changed it);
    /// fetch it with [`Hooks::take`] after the pass.
    pub fn read(mut self, point: HookPoint) -> Self {
        self.reads.insert(point);
        self
    }

    /// Replaces the activation at `point` with `value` (broadcast to its shape).
    pub fn replace(self, point: HookPoint, value: Tensor) -> Self {
        self.with_fn(point, move |x| {
            Ok(Some(value.broadcast_as(x.shape())?.contiguous()?))
        })
    }

    /// Adds `delta` (broadcast) to the activation at `point`, e.g. a steering vector.
    pub fn add(self, point: HookPoint, delta: Tensor) -> Self {
        self.with_fn(point, move |x| Ok(Some(x.broadcast_add(&delta)?)))
    }

    /// Runs `f` at `point`; `f` returns `Some(new)` to replace the activation, `None` to keep it.
    pub fn with_fn(
        mut self,
        point: HookPoint,
        f: impl FnMut(&Tensor) -> Result<Option<Tensor>> + Send + 'a,
    ) -> Self {
        self.fns.entry(point).or_default().push(Box::new(f));
        self
    }

    /// Stops the pass right after the deepest hooked point, skipping the rest of the model (the
    /// pass then returns no logits unless `logits` itself is hooked).
    pub fn stop_early(mut self, yes: bool) -> Self {
        self.stop_early = yes;
        self
    }

    /// Removes and returns the activation captured at `point` by [`Hooks::read`].
    pub fn take(&mut self, point: HookPoint) -> Option<Tensor> {
        self.captured.remove(&point)
    }

    /// The deepest hooked point (read or function), if any.
    pub fn deepest(&self) -> Option<HookPoint> {
        let a = self.fns.keys().next_back().copied();
        let b = self.reads.iter().next_back().copied();
        a.max(b)
    }

    /// The point after which the pass may stop, when stopping early was asked for.
    pub(crate) fn stop_after(&self) -> Option<HookPoint> {
        if self.stop_early {
            self.deepest()
        } else {
            None
        }
    }

    /// Whether any hook or read is registered at a point inside `layer`.
    pub(crate) fn touches_layer(&self, layer: usize) -> bool {
        let hit = |p: &HookPoint| p.layer() == Some(layer);
        self.fns.keys().any(hit) || self.reads.iter().any(hit)
    }

    /// Runs the hooks at `point` on `x` and returns the (possibly replaced) activation.
    pub(crate) fn apply(&mut self, point: HookPoint, mut x: Tensor) -> Result<Tensor> {
        if let Some(fns) = self.fns.get_mut(&point) {
            for f in fns.iter_mut() {
                if let Some(new) = f(&x)? {
                    if new.dims() != x.dims() {
                        candle_core::bail!(
                            "hook at {point} returned shape {:?}, expected {:?}",
                            new.dims(),
                            x.dims()
                        );
                    }
                    x = new;
                }
            }
        }
        if self.reads.contains(&point) {
            self.captured.insert(point, x.clone());
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_follows_the_pass() {
        let all = HookPoint::all(3);
        assert_eq!(all.len(), 1 + 3 * 6 + 2);
        for p in &all {
            assert_eq!(p.to_string().parse::<HookPoint>().unwrap(), *p);
        }
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(sorted, all);
        assert_eq!(all[1].to_string(), "blocks.0.resid_pre");
        assert_eq!(all[6].to_string(), "blocks.0.resid_post");
        assert!("blocks.x.resid_pre".parse::<HookPoint>().is_err());
        assert!("blocks.1.resid".parse::<HookPoint>().is_err());
        assert!("embedding".parse::<HookPoint>().is_err());
    }

    #[test]
    fn hooks_chain_and_capture() {
        let dev = candle_core::Device::Cpu;
        let p = HookPoint::block(0, BlockSite::MlpOut);
        let x = Tensor::new(&[[[1f32, 2.0]]], &dev).unwrap();
        let mut hooks = Hooks::new()
            .add(p, Tensor::new(&[10f32, 20.0], &dev).unwrap())
            .read(p)
            .stop_early(true);
        let y = hooks.apply(p, x).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [11.0, 22.0]
        );
        let got = hooks.take(p).unwrap();
        assert_eq!(
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [11.0, 22.0]
        );
        assert_eq!(hooks.stop_after(), Some(p));
        assert!(hooks.touches_layer(0) && !hooks.touches_layer(1));
    }
}
