//! A session: a graph, its plan and its weights uploaded once to a backend. Each
//! [`Session::run`] checks the host tensors fed by the caller against the graph's
//! inputs, walks the plan with a private table of values, drops every intermediate
//! after its last use and downloads the graph outputs. The session also holds the
//! run-time config of each GLoRA layer ([`Session::set_glora_configs`]), which a
//! trainer may change between runs, and lets weights be replaced in place
//! ([`Session::set_param`]).

use std::collections::HashMap;

use crate::glora::{LayerConfig, ModelConfig};
use crate::ir::{DType, Dim, GloraLinearAttrs, GradOp, Graph, Node, Op, Tensor, TensorType};

use super::plan::SourceKind;
use super::{Backend, ExecError, Plan};

/// A graph ready to run on backend `B`.
pub struct Session<B: Backend> {
    graph: Graph,
    plan: Plan,
    backend: B,
    /// Uploaded weights, indexed by value id (`None` for every other value).
    weights: Vec<Option<B::Value>>,
    inputs: Vec<InputSpec>,
    /// Stored adapter rank of each GLoRA layer of the graph, by layer name.
    glora_ranks: HashMap<String, usize>,
    /// The run-time config of each GLoRA layer, by layer name.
    glora_configs: HashMap<String, LayerConfig>,
    /// Time spent per op name across runs, when profiling is on.
    profile: Option<std::sync::Mutex<HashMap<&'static str, (usize, std::time::Duration)>>>,
}

/// What the graph expects for one input.
struct InputSpec {
    name: String,
    value: usize,
    ty: Option<TensorType>,
}

impl<B: Backend> Session<B> {
    pub fn new(g: &Graph, backend: B) -> Result<Self, ExecError> {
        let plan = Plan::new(g)?;
        let mut weights: Vec<Option<B::Value>> = vec![None; plan.num_values()];
        for &(v, kind) in plan.sources() {
            if kind != SourceKind::Weight {
                continue;
            }
            let node = g.node(plan.port(v).node);
            let t = node.op.weight().ok_or_else(|| {
                ExecError::Graph(format!("weight node '{}' holds no tensor", node.name))
            })?;
            let uploaded = backend
                .upload(t)
                .map_err(|e| ExecError::node(node, format!("uploading the weight failed: {e}")))?;
            weights[v] = Some(uploaded);
        }
        let mut inputs = Vec::new();
        for &id in &g.inputs {
            let node = g.node(id);
            if !matches!(node.op, Op::Input) {
                return Err(ExecError::Graph(format!(
                    "graph input '{}' is not an Input node",
                    node.name
                )));
            }
            let value = node.outputs.first().ok_or_else(|| {
                ExecError::Graph(format!("graph input '{}' has no output value", node.name))
            })?;
            let v = plan.id_of(crate::ir::Port::new(id, 0)).ok_or_else(|| {
                ExecError::Graph(format!("graph input '{}' is not planned", node.name))
            })?;
            inputs.push(InputSpec {
                name: value.name.clone(),
                value: v,
                ty: value.ty.clone(),
            });
        }
        let glora_ranks = g
            .node_ids()
            .into_iter()
            .filter_map(|id| match &g.node(id).op {
                Op::GloraLinear(a) | Op::Grad(GradOp::GloraLinear(a)) => {
                    Some((a.layer.clone(), a.rank))
                }
                _ => None,
            })
            .collect();
        Ok(Session {
            graph: g.clone(),
            plan,
            backend,
            weights,
            inputs,
            glora_ranks,
            glora_configs: HashMap::new(),
            profile: None,
        })
    }

    /// Configs of the GloraLinear layers, by layer name; may be changed between runs.
    /// Layers the map does not name keep the config they had. Nothing changes when a
    /// config names a layer the graph does not adapt or reads a rank above the
    /// layer's stored rank.
    pub fn set_glora_configs(&mut self, configs: &ModelConfig) -> Result<(), ExecError> {
        for (layer, config) in configs.iter() {
            let Some(&stored) = self.glora_ranks.get(layer) else {
                let mut known: Vec<&str> = self.glora_ranks.keys().map(String::as_str).collect();
                known.sort_unstable();
                return Err(ExecError::Graph(format!(
                    "GLoRA config names layer '{layer}', which the graph does not adapt (adapted: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            if let Some((slot, r)) = config.lora_ranks().find(|&(_, r)| r > stored) {
                return Err(ExecError::Graph(format!(
                    "GLoRA layer '{layer}': option {slot} reads rank {r}, but the layer stores rank {stored}"
                )));
            }
        }
        for (layer, config) in configs.iter() {
            self.glora_configs.insert(layer.to_string(), *config);
        }
        Ok(())
    }

    /// Replaces the uploaded value of the `Const` or `Param` node whose output is
    /// named `value_name`; the new tensor must have the same type and shape.
    pub fn set_param(&mut self, value_name: &str, t: &Tensor) -> Result<(), ExecError> {
        let found = self.plan.sources().iter().find_map(|&(v, kind)| {
            let p = self.plan.port(v);
            (kind == SourceKind::Weight && self.graph.value(p).name == value_name).then_some((v, p))
        });
        let Some((v, port)) = found else {
            return Err(ExecError::Input {
                name: value_name.to_string(),
                msg: "not a weight the session runs with".into(),
            });
        };
        let node = self.graph.node(port.node);
        let old = node.op.weight().ok_or_else(|| {
            ExecError::Graph(format!("weight node '{}' holds no tensor", node.name))
        })?;
        if old.dtype() != t.dtype() || old.shape() != t.shape() {
            return Err(ExecError::Input {
                name: value_name.to_string(),
                msg: format!(
                    "expected {}, got {}",
                    describe(old.dtype(), old.shape()),
                    describe(t.dtype(), t.shape())
                ),
            });
        }
        let uploaded = self
            .backend
            .upload(t)
            .map_err(|e| ExecError::node(node, format!("uploading the weight failed: {e}")))?;
        self.weights[v] = Some(uploaded);
        let node = self.graph.node_mut(port.node);
        node.op = match node.op {
            Op::Param(_) => Op::Param(t.clone()),
            _ => Op::Const(t.clone()),
        };
        Ok(())
    }

    /// Whether the graph holds a GLoRA layer of that name.
    pub fn adapts(&self, layer: &str) -> bool {
        self.glora_ranks.contains_key(layer)
    }

    /// Starts (or stops and clears) accumulating the time spent in each op.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| std::sync::Mutex::new(HashMap::new()));
    }

    /// Op name, calls and total time since profiling started, most expensive first.
    pub fn profile(&self) -> Vec<(&'static str, usize, std::time::Duration)> {
        let Some(Ok(m)) = self.profile.as_ref().map(|m| m.lock()) else {
            return Vec::new();
        };
        let mut rows: Vec<_> = m.iter().map(|(k, (n, d))| (*k, *n, *d)).collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.2));
        rows
    }

    pub fn input_names(&self) -> Vec<String> {
        self.inputs.iter().map(|i| i.name.clone()).collect()
    }

    pub fn output_names(&self) -> Vec<String> {
        self.graph
            .outputs
            .iter()
            .map(|&p| self.graph.value(p).name.clone())
            .collect()
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Runs the graph on `inputs` (name, tensor); returns the outputs in graph order.
    pub fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<Tensor>, ExecError> {
        self.run_values(inputs)?
            .iter()
            .map(|v| self.backend.download(v))
            .collect()
    }

    /// Like [`Session::run`], but the outputs stay on the backend, in graph order.
    pub fn run_values(&self, inputs: &[(String, Tensor)]) -> Result<Vec<B::Value>, ExecError> {
        let fed = self.match_inputs(inputs)?;
        let mut table: Vec<Option<B::Value>> = vec![None; self.plan.num_values()];
        for (spec, t) in self.inputs.iter().zip(fed) {
            if self.plan.is_unused_input(spec.value) {
                continue;
            }
            let v = self.backend.upload(t).map_err(|e| ExecError::Input {
                name: spec.name.clone(),
                msg: format!("upload failed: {e}"),
            })?;
            table[spec.value] = Some(v);
        }
        for step in self.plan.steps() {
            let node = self.graph.node(step.node);
            let args: Vec<Option<&B::Value>> = step
                .inputs
                .iter()
                .map(|v| v.map(|v| self.lookup(&table, v)).transpose())
                .collect::<Result<_, _>>()?;
            let started = self.profile.as_ref().map(|_| std::time::Instant::now());
            let outs = match &node.op {
                Op::GloraLinear(a) => {
                    let config = self.glora_config(node, a)?;
                    vec![self.backend.run_glora_linear(node, a, config, &args)?]
                }
                Op::Grad(GradOp::GloraLinear(a)) => {
                    let config = self.glora_config(node, a)?;
                    self.backend.run_glora_linear_grad(node, a, config, &args)?
                }
                _ => self.backend.run_node(node, &args)?,
            };
            if let (Some(t0), Some(Ok(mut m))) = (started, self.profile.as_ref().map(|m| m.lock()))
            {
                let e = m.entry(node.op.name()).or_default();
                e.0 += 1;
                e.1 += t0.elapsed();
            }
            if outs.len() != step.outputs.len() {
                return Err(ExecError::node(
                    node,
                    format!(
                        "produced {} outputs, the node declares {}",
                        outs.len(),
                        step.outputs.len()
                    ),
                ));
            }
            for (v, o) in step.outputs.iter().zip(outs) {
                table[*v] = Some(o);
            }
            for &v in &step.frees {
                table[v] = None;
            }
        }
        self.plan
            .outputs()
            .iter()
            .map(|&v| self.lookup(&table, v).cloned())
            .collect()
    }

    /// The uploaded value of the `Param` or `Const` node whose output is named
    /// `value_name`, for updating it in place on the backend (an optimiser step).
    /// The graph keeps the host tensor it was built with; [`Session::set_param`]
    /// replaces both.
    pub fn param_mut(&mut self, value_name: &str) -> Option<&mut B::Value> {
        let v = self.plan.sources().iter().find_map(|&(v, kind)| {
            let p = self.plan.port(v);
            (kind == SourceKind::Weight && self.graph.value(p).name == value_name).then_some(v)
        })?;
        self.weights[v].as_mut()
    }

    fn glora_config(&self, node: &Node, a: &GloraLinearAttrs) -> Result<&LayerConfig, ExecError> {
        self.glora_configs.get(&a.layer).ok_or_else(|| {
            ExecError::node(
                node,
                format!(
                    "GLoRA layer '{}' has no config: set one with set_glora_configs",
                    a.layer
                ),
            )
        })
    }

    fn lookup<'a>(
        &'a self,
        table: &'a [Option<B::Value>],
        v: usize,
    ) -> Result<&'a B::Value, ExecError> {
        table[v]
            .as_ref()
            .or(self.weights[v].as_ref())
            .ok_or_else(|| {
                let p = self.plan.port(v);
                ExecError::Graph(format!(
                    "value '{}' is read after it was dropped or before it was computed",
                    self.graph.value(p).name
                ))
            })
    }

    /// Pairs each graph input with the tensor fed for it, checking names, types and
    /// shapes; symbolic dimensions must take one size across all inputs.
    fn match_inputs<'a>(&self, fed: &'a [(String, Tensor)]) -> Result<Vec<&'a Tensor>, ExecError> {
        let mut by_name: HashMap<&str, &Tensor> = HashMap::new();
        for (name, t) in fed {
            if !self.inputs.iter().any(|i| &i.name == name) {
                let known: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
                return Err(ExecError::Input {
                    name: name.clone(),
                    msg: format!("not an input of the graph (inputs: {})", known.join(", ")),
                });
            }
            if by_name.insert(name.as_str(), t).is_some() {
                return Err(ExecError::Input {
                    name: name.clone(),
                    msg: "given more than once".into(),
                });
            }
        }
        let mut symbols: HashMap<&str, (usize, &str)> = HashMap::new();
        let mut out = Vec::with_capacity(self.inputs.len());
        for spec in &self.inputs {
            let t = *by_name
                .get(spec.name.as_str())
                .ok_or_else(|| ExecError::Input {
                    name: spec.name.clone(),
                    msg: "missing".into(),
                })?;
            if let Some(ty) = &spec.ty {
                check_input(&spec.name, ty, t, &mut symbols)?;
            }
            out.push(t);
        }
        Ok(out)
    }
}

fn check_input<'a>(
    name: &'a str,
    ty: &'a TensorType,
    t: &Tensor,
    symbols: &mut HashMap<&'a str, (usize, &'a str)>,
) -> Result<(), ExecError> {
    let mismatch = || ExecError::Input {
        name: name.to_string(),
        msg: format!("expected {ty}, got {}", describe(t.dtype(), t.shape())),
    };
    if t.dtype() != ty.dtype || t.rank() != ty.shape.rank() {
        return Err(mismatch());
    }
    for (d, &n) in ty.shape.dims().iter().zip(t.shape()) {
        match d {
            Dim::Known(k) if *k != n => return Err(mismatch()),
            Dim::Known(_) => {}
            Dim::Sym(s) => match symbols.get(s.as_str()) {
                Some(&(bound, by)) if bound != n => {
                    return Err(ExecError::Input {
                        name: name.to_string(),
                        msg: format!(
                            "dimension '{s}' is {n} here but {bound} in input '{by}' (expected {ty}, got {})",
                            describe(t.dtype(), t.shape())
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    symbols.insert(s.as_str(), (n, name));
                }
            },
        }
    }
    Ok(())
}

fn describe(dtype: DType, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{dtype}[{}]", dims.join(","))
}
