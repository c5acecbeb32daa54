//! The graph: operations as nodes of a `petgraph` `StableDiGraph` (indices stay valid
//! while passes remove nodes), edges carrying one tensor from an output slot to an
//! input slot. Graph inputs are `Op::Input` nodes; graph outputs are ports. The
//! importer builds it, passes rewrite it, executors and the exporter read it.

use std::collections::{HashMap, HashSet};

use petgraph::Direction;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;

use super::{Op, Tensor, TensorType};

/// One output of a node: its tensor name (kept from ONNX, written back on export)
/// and its type, once known.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    pub ty: Option<TensorType>,
}

impl Value {
    pub fn new(name: impl Into<String>) -> Value {
        Value {
            name: name.into(),
            ty: None,
        }
    }

    pub fn typed(name: impl Into<String>, ty: TensorType) -> Value {
        Value {
            name: name.into(),
            ty: Some(ty),
        }
    }
}

/// A node: a named operation with a fixed number of input slots and its outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    /// Number of input slots, including optional ones that may have no edge.
    pub num_inputs: usize,
    pub outputs: Vec<Value>,
}

impl Node {
    pub fn new(name: impl Into<String>, op: Op, num_inputs: usize, outputs: Vec<Value>) -> Node {
        Node {
            name: name.into(),
            op,
            num_inputs,
            outputs,
        }
    }
}

/// An edge: the tensor of output slot `from_slot` feeds input slot `to_slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Edge {
    pub from_slot: usize,
    pub to_slot: usize,
}

/// A tensor in the graph: output `slot` of `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    pub node: NodeIndex,
    pub slot: usize,
}

impl Port {
    pub fn new(node: NodeIndex, slot: usize) -> Port {
        Port { node, slot }
    }
}

/// Structural errors found by [`Graph::validate`] and graph edits.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("node '{node}': {msg}")]
    Node { node: String, msg: String },
    #[error("the graph has a cycle through node '{0}'")]
    Cycle(String),
    #[error("{0}")]
    Other(String),
}

/// A computation graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    g: StableDiGraph<Node, Edge>,
    /// The graph inputs, in order; each is an `Op::Input` node.
    pub inputs: Vec<NodeIndex>,
    /// The graph outputs, in order.
    pub outputs: Vec<Port>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    pub fn add_node(&mut self, node: Node) -> NodeIndex {
        self.g.add_node(node)
    }

    /// Adds an `Op::Input` node and registers it as the next graph input.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> NodeIndex {
        let name = name.into();
        let id = self.g.add_node(Node::new(
            name.clone(),
            Op::Input,
            0,
            vec![Value::typed(name, ty)],
        ));
        self.inputs.push(id);
        id
    }

    /// Adds a `Const` node holding `t`, its output named `name`.
    pub fn add_const(&mut self, name: impl Into<String>, t: Tensor) -> NodeIndex {
        let name = name.into();
        let ty = TensorType::new(t.dtype(), t.ir_shape());
        self.g.add_node(Node::new(
            name.clone(),
            Op::Const(t),
            0,
            vec![Value::typed(name, ty)],
        ))
    }

    /// Adds a `Param` (trainable) node holding `t`, its output named `name`.
    pub fn add_param(&mut self, name: impl Into<String>, t: Tensor) -> NodeIndex {
        let name = name.into();
        let ty = TensorType::new(t.dtype(), t.ir_shape());
        self.g.add_node(Node::new(
            name.clone(),
            Op::Param(t),
            0,
            vec![Value::typed(name, ty)],
        ))
    }

    /// Adds a node computing `op` on `inputs` (slot i gets `inputs[i]`, `None` leaves
    /// an optional slot empty), with one output per name in `outputs`.
    pub fn add_op(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[Option<Port>],
        outputs: &[&str],
    ) -> NodeIndex {
        let node = Node::new(
            name,
            op,
            inputs.len(),
            outputs.iter().map(|n| Value::new(*n)).collect(),
        );
        let id = self.g.add_node(node);
        for (slot, p) in inputs.iter().enumerate() {
            if let Some(p) = p {
                self.connect(*p, id, slot);
            }
        }
        id
    }

    /// Connects output `from` to input slot `slot` of `to`, replacing any edge that
    /// fed that slot before.
    pub fn connect(&mut self, from: Port, to: NodeIndex, slot: usize) -> EdgeIndex {
        if let Some(old) = self.input_edge(to, slot) {
            self.g.remove_edge(old);
        }
        self.g.add_edge(
            from.node,
            to,
            Edge {
                from_slot: from.slot,
                to_slot: slot,
            },
        )
    }

    /// Removes the edge into input slot `slot` of `node`, if any.
    pub fn disconnect(&mut self, node: NodeIndex, slot: usize) {
        if let Some(e) = self.input_edge(node, slot) {
            self.g.remove_edge(e);
        }
    }

    fn input_edge(&self, node: NodeIndex, slot: usize) -> Option<EdgeIndex> {
        self.g
            .edges_directed(node, Direction::Incoming)
            .find(|e| e.weight().to_slot == slot)
            .map(|e| e.id())
    }

    /// Removes a node and all its edges; drops it from the input list too.
    pub fn remove_node(&mut self, id: NodeIndex) -> Option<Node> {
        self.inputs.retain(|&i| i != id);
        self.g.remove_node(id)
    }

    pub fn node(&self, id: NodeIndex) -> &Node {
        &self.g[id]
    }

    pub fn node_mut(&mut self, id: NodeIndex) -> &mut Node {
        &mut self.g[id]
    }

    pub fn contains(&self, id: NodeIndex) -> bool {
        self.g.contains_node(id)
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// All node indices, in index order.
    pub fn node_ids(&self) -> Vec<NodeIndex> {
        self.g.node_indices().collect()
    }

    /// The producer of each input slot of `id` (`None` for an empty optional slot).
    pub fn inputs_of(&self, id: NodeIndex) -> Vec<Option<Port>> {
        let n = self.g[id].num_inputs;
        let mut v = vec![None; n];
        for e in self.g.edges_directed(id, Direction::Incoming) {
            let w = e.weight();
            if w.to_slot < n {
                v[w.to_slot] = Some(Port::new(e.source(), w.from_slot));
            }
        }
        v
    }

    /// The producer of input slot `slot` of `id`.
    pub fn input(&self, id: NodeIndex, slot: usize) -> Option<Port> {
        self.g
            .edges_directed(id, Direction::Incoming)
            .find(|e| e.weight().to_slot == slot)
            .map(|e| Port::new(e.source(), e.weight().from_slot))
    }

    /// Every (consumer, input slot) reading `port`, sorted for determinism.
    pub fn consumers(&self, port: Port) -> Vec<(NodeIndex, usize)> {
        let mut v: Vec<_> = self
            .g
            .edges_directed(port.node, Direction::Outgoing)
            .filter(|e| e.weight().from_slot == port.slot)
            .map(|e| (e.target(), e.weight().to_slot))
            .collect();
        v.sort();
        v
    }

    /// Number of readers of `port`, counting each graph-output use as one.
    pub fn use_count(&self, port: Port) -> usize {
        self.consumers(port).len() + self.outputs.iter().filter(|&&o| o == port).count()
    }

    /// Points every reader of `old` (consumers and graph outputs) at `new` instead.
    /// When `old` was a graph output the output keeps its name: the value of `new`
    /// is renamed to it.
    pub fn replace_uses(&mut self, old: Port, new: Port) {
        if old == new {
            return;
        }
        for (c, slot) in self.consumers(old) {
            self.connect(new, c, slot);
        }
        let mut renamed = None;
        for o in self.outputs.iter_mut() {
            if *o == old {
                *o = new;
                renamed = Some(self.g[old.node].outputs[old.slot].name.clone());
            }
        }
        if let Some(name) = renamed {
            // A graph input cannot be renamed without changing the interface.
            if !matches!(self.g[new.node].op, Op::Input) {
                self.g[new.node].outputs[new.slot].name = name;
            }
        }
    }

    /// The value (name and type) at `port`.
    pub fn value(&self, port: Port) -> &Value {
        &self.g[port.node].outputs[port.slot]
    }

    pub fn value_type(&self, port: Port) -> Option<&TensorType> {
        self.value(port).ty.as_ref()
    }

    /// The tensor at `port` if it is produced by a `Const` node.
    pub fn const_value(&self, port: Port) -> Option<&Tensor> {
        match &self.g[port.node].op {
            Op::Const(t) if port.slot == 0 => Some(t),
            _ => None,
        }
    }

    /// The tensor at input `slot` of `node` if it is a constant.
    pub fn const_input(&self, node: NodeIndex, slot: usize) -> Option<&Tensor> {
        self.input(node, slot).and_then(|p| self.const_value(p))
    }

    /// Nodes in an order where every producer precedes its consumers.
    pub fn topo_order(&self) -> Result<Vec<NodeIndex>, GraphError> {
        petgraph::algo::toposort(&self.g, None)
            .map_err(|c| GraphError::Cycle(self.g[c.node_id()].name.clone()))
    }

    /// A topological order that always takes the lowest-indexed ready node, so it is
    /// deterministic and follows insertion order where dependencies allow: exports
    /// give the same bytes and layer lists keep the source file's order.
    pub fn stable_topo_order(&self) -> Result<Vec<NodeIndex>, GraphError> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut pending: HashMap<NodeIndex, usize> = self
            .g
            .node_indices()
            .map(|n| (n, self.g.edges_directed(n, Direction::Incoming).count()))
            .collect();
        let mut ready: BinaryHeap<Reverse<NodeIndex>> = pending
            .iter()
            .filter(|&(_, &d)| d == 0)
            .map(|(&n, _)| Reverse(n))
            .collect();
        let mut order = Vec::with_capacity(pending.len());
        while let Some(Reverse(n)) = ready.pop() {
            order.push(n);
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                if let Some(d) = pending.get_mut(&e.target()) {
                    *d -= 1;
                    if *d == 0 {
                        ready.push(Reverse(e.target()));
                    }
                }
            }
        }
        if order.len() != pending.len() {
            let stuck = pending
                .iter()
                .filter(|&(_, &d)| d > 0)
                .map(|(&n, _)| n)
                .min()
                .map(|n| self.g[n].name.clone())
                .unwrap_or_default();
            return Err(GraphError::Cycle(stuck));
        }
        Ok(order)
    }

    /// Finds a node by name.
    pub fn find_node(&self, name: &str) -> Option<NodeIndex> {
        self.g.node_indices().find(|&i| self.g[i].name == name)
    }

    /// Finds the port whose value carries `name`.
    pub fn find_value(&self, name: &str) -> Option<Port> {
        self.g.node_indices().find_map(|i| {
            self.g[i]
                .outputs
                .iter()
                .position(|v| v.name == name)
                .map(|s| Port::new(i, s))
        })
    }

    /// A node or value name not used in the graph yet, derived from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        let used: HashSet<&str> = self
            .g
            .node_weights()
            .flat_map(|n| {
                std::iter::once(n.name.as_str()).chain(n.outputs.iter().map(|v| v.name.as_str()))
            })
            .collect();
        if !used.contains(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !used.contains(n.as_str()))
            .expect("an unused name exists")
    }

    /// Histogram of op names over the compute nodes (inputs and weights excluded).
    pub fn op_histogram(&self) -> std::collections::BTreeMap<String, usize> {
        let mut h = std::collections::BTreeMap::new();
        for n in self.g.node_weights() {
            if matches!(n.op, Op::Input | Op::Const(_) | Op::Param(_)) {
                continue;
            }
            *h.entry(n.op.name().to_string()).or_insert(0) += 1;
        }
        h
    }

    /// Number of weight entries held by `Const` and `Param` nodes.
    pub fn weight_count(&self) -> usize {
        self.g
            .node_weights()
            .filter_map(|n| n.op.weight())
            .map(Tensor::numel)
            .sum()
    }

    /// Checks the structural invariants every pass must keep: edges point at existing
    /// slots, no slot is fed twice, required inputs are connected, value names are
    /// unique, graph inputs are `Input` nodes, outputs exist, and there is no cycle.
    pub fn validate(&self) -> Result<(), GraphError> {
        let err = |n: &Node, msg: String| GraphError::Node {
            node: n.name.clone(),
            msg,
        };
        let mut names: HashMap<&str, &str> = HashMap::new();
        for id in self.g.node_indices() {
            let n = &self.g[id];
            let mut seen = vec![false; n.num_inputs];
            for e in self.g.edges_directed(id, Direction::Incoming) {
                let w = e.weight();
                if w.to_slot >= n.num_inputs {
                    return Err(err(
                        n,
                        format!("edge into slot {} of {} slots", w.to_slot, n.num_inputs),
                    ));
                }
                if std::mem::replace(&mut seen[w.to_slot], true) {
                    return Err(err(n, format!("input slot {} is fed twice", w.to_slot)));
                }
                let src = &self.g[e.source()];
                if w.from_slot >= src.outputs.len() {
                    return Err(err(
                        n,
                        format!(
                            "reads output {} of '{}', which has {}",
                            w.from_slot,
                            src.name,
                            src.outputs.len()
                        ),
                    ));
                }
            }
            for (slot, connected) in seen.iter().enumerate() {
                if !connected && super::infer::input_required(&n.op, slot) {
                    return Err(err(
                        n,
                        format!("required input {slot} of {} is not connected", n.op.name()),
                    ));
                }
            }
            if matches!(n.op, Op::Input | Op::Const(_) | Op::Param(_)) && n.num_inputs != 0 {
                return Err(err(n, "a source node has inputs".into()));
            }
            for v in &n.outputs {
                if let Some(other) = names.insert(v.name.as_str(), n.name.as_str()) {
                    return Err(err(
                        n,
                        format!("value name '{}' is also produced by '{other}'", v.name),
                    ));
                }
            }
        }
        for &i in &self.inputs {
            if !self.g.contains_node(i) || !matches!(self.g[i].op, Op::Input) {
                return Err(GraphError::Other(format!(
                    "graph input {i:?} is not an Input node"
                )));
            }
        }
        for id in self.g.node_indices() {
            if matches!(self.g[id].op, Op::Input) && !self.inputs.contains(&id) {
                return Err(err(
                    &self.g[id],
                    "Input node missing from the graph's input list".into(),
                ));
            }
        }
        for o in &self.outputs {
            if !self.g.contains_node(o.node) || o.slot >= self.g[o.node].outputs.len() {
                return Err(GraphError::Other(format!(
                    "graph output {o:?} does not exist"
                )));
            }
        }
        self.topo_order()?;
        Ok(())
    }

    /// Changes the declared shape of graph input `name` (its dtype stays). Types
    /// downstream are stale afterwards: run `infer::infer_types` again.
    pub fn set_input_shape(&mut self, name: &str, shape: super::Shape) -> Result<(), GraphError> {
        let id = self
            .inputs
            .iter()
            .copied()
            .find(|&i| self.g[i].name == name)
            .ok_or_else(|| GraphError::Other(format!("'{name}' is not an input of the graph")))?;
        let v = &mut self.g[id].outputs[0];
        let dtype =
            v.ty.as_ref()
                .map(|t| t.dtype)
                .ok_or_else(|| GraphError::Other(format!("input '{name}' has no declared type")))?;
        v.ty = Some(TensorType::new(dtype, shape));
        Ok(())
    }

    /// Direct access to the underlying petgraph graph, for algorithms.
    pub fn petgraph(&self) -> &StableDiGraph<Node, Edge> {
        &self.g
    }
}
