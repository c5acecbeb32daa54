//! The execution plan of a graph: the compute nodes needed for the graph outputs in
//! an order where producers come first, every value numbered densely, and for each
//! step the values whose last reader it is, so that a session drops each
//! intermediate buffer as soon as it is no longer needed. Graph outputs and weights
//! are never dropped. Built from an [`ir::Graph`](crate::ir::Graph) by
//! [`Plan::new`]; read by [`Session`](super::Session).

use std::collections::{HashMap, HashSet};

use crate::ir::{Graph, NodeIndex, Op, Port};

use super::ExecError;

/// One compute node of the plan.
#[derive(Clone, Debug)]
pub struct Step {
    pub node: NodeIndex,
    /// Value id feeding each input slot (`None` for an empty optional slot).
    pub inputs: Vec<Option<usize>>,
    /// Value id of each output slot.
    pub outputs: Vec<usize>,
    /// Values to drop once this step has run.
    pub frees: Vec<usize>,
}

/// Where a value comes from before any step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SourceKind {
    Input,
    Weight,
}

/// The order of execution and the lifetime of every value of a graph.
#[derive(Clone, Debug)]
pub struct Plan {
    steps: Vec<Step>,
    ports: Vec<Port>,
    ids: HashMap<Port, usize>,
    sources: Vec<(usize, SourceKind)>,
    outputs: Vec<usize>,
    /// Graph inputs that no step reads and no output returns: dropped on arrival.
    unused_inputs: HashSet<usize>,
}

impl Plan {
    pub fn new(g: &Graph) -> Result<Plan, ExecError> {
        let live = live_nodes(g)?;
        let order: Vec<NodeIndex> = g
            .topo_order()
            .map_err(|e| ExecError::Graph(e.to_string()))?
            .into_iter()
            .filter(|n| live.contains(n))
            .collect();

        let mut plan = Plan {
            steps: Vec::new(),
            ports: Vec::new(),
            ids: HashMap::new(),
            sources: Vec::new(),
            outputs: Vec::new(),
            unused_inputs: HashSet::new(),
        };
        for &id in &g.inputs {
            let v = plan.intern(Port::new(id, 0));
            plan.sources.push((v, SourceKind::Input));
        }
        for &id in &order {
            let node = g.node(id);
            match node.op {
                Op::Input => {
                    if !g.inputs.contains(&id) {
                        return Err(ExecError::Graph(format!(
                            "Input node '{}' is not in the graph's input list",
                            node.name
                        )));
                    }
                }
                Op::Const(_) | Op::Param(_) => {
                    let v = plan.intern(Port::new(id, 0));
                    plan.sources.push((v, SourceKind::Weight));
                }
                _ => {
                    let mut inputs = Vec::with_capacity(node.num_inputs);
                    for (slot, p) in g.inputs_of(id).into_iter().enumerate() {
                        inputs.push(match p {
                            Some(p) => {
                                let producer = g.node(p.node);
                                if p.slot >= producer.outputs.len() {
                                    return Err(ExecError::Graph(format!(
                                        "node '{}' slot {slot} reads output {} of '{}', which has {}",
                                        node.name,
                                        p.slot,
                                        producer.name,
                                        producer.outputs.len()
                                    )));
                                }
                                Some(plan.id_of(p).ok_or_else(|| {
                                    ExecError::Graph(format!(
                                        "node '{}' reads '{}' before it is computed",
                                        node.name, producer.name
                                    ))
                                })?)
                            }
                            None => None,
                        });
                    }
                    let outputs = (0..node.outputs.len())
                        .map(|s| plan.intern(Port::new(id, s)))
                        .collect();
                    plan.steps.push(Step {
                        node: id,
                        inputs,
                        outputs,
                        frees: Vec::new(),
                    });
                }
            }
        }
        for o in &g.outputs {
            if !g.contains(o.node) || o.slot >= g.node(o.node).outputs.len() {
                return Err(ExecError::Graph(format!(
                    "graph output {o:?} does not exist"
                )));
            }
            let v = plan
                .id_of(*o)
                .ok_or_else(|| ExecError::Graph(format!("graph output {o:?} is never computed")))?;
            plan.outputs.push(v);
        }
        plan.assign_frees();
        Ok(plan)
    }

    /// The compute steps, producers before consumers.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The nodes run, in order.
    pub fn order(&self) -> Vec<NodeIndex> {
        self.steps.iter().map(|s| s.node).collect()
    }

    /// The port that value id `v` stands for.
    pub fn port(&self, v: usize) -> Port {
        self.ports[v]
    }

    /// Number of distinct values (inputs, weights and node outputs).
    pub fn num_values(&self) -> usize {
        self.ports.len()
    }

    /// Value ids of the graph outputs, in graph order.
    pub fn outputs(&self) -> &[usize] {
        &self.outputs
    }

    pub(crate) fn sources(&self) -> &[(usize, SourceKind)] {
        &self.sources
    }

    pub(crate) fn id_of(&self, p: Port) -> Option<usize> {
        self.ids.get(&p).copied()
    }

    pub(crate) fn is_unused_input(&self, v: usize) -> bool {
        self.unused_inputs.contains(&v)
    }

    fn intern(&mut self, p: Port) -> usize {
        if let Some(&v) = self.ids.get(&p) {
            return v;
        }
        let v = self.ports.len();
        self.ports.push(p);
        self.ids.insert(p, v);
        v
    }

    /// Each value that is neither a weight nor a graph output is freed after the
    /// last step reading it, or right after the step producing it when nothing does.
    fn assign_frees(&mut self) {
        let keep: HashSet<usize> = self
            .outputs
            .iter()
            .copied()
            .chain(
                self.sources
                    .iter()
                    .filter(|(_, k)| *k == SourceKind::Weight)
                    .map(|(v, _)| *v),
            )
            .collect();
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            for v in s
                .outputs
                .iter()
                .copied()
                .chain(s.inputs.iter().flatten().copied())
            {
                last_use.insert(v, i);
            }
        }
        for (v, kind) in &self.sources {
            if *kind == SourceKind::Input && !last_use.contains_key(v) && !keep.contains(v) {
                self.unused_inputs.insert(*v);
            }
        }
        let mut frees: Vec<(usize, usize)> = last_use
            .into_iter()
            .filter(|(v, _)| !keep.contains(v))
            .map(|(v, i)| (i, v))
            .collect();
        frees.sort_unstable();
        for (i, v) in frees {
            self.steps[i].frees.push(v);
        }
    }
}

/// Nodes that some graph output depends on.
fn live_nodes(g: &Graph) -> Result<HashSet<NodeIndex>, ExecError> {
    let mut live = HashSet::new();
    let mut stack: Vec<NodeIndex> = Vec::new();
    for o in &g.outputs {
        if !g.contains(o.node) {
            return Err(ExecError::Graph(format!(
                "graph output {o:?} does not exist"
            )));
        }
        stack.push(o.node);
    }
    while let Some(n) = stack.pop() {
        if !live.insert(n) {
            continue;
        }
        stack.extend(g.inputs_of(n).into_iter().flatten().map(|p| p.node));
    }
    Ok(live)
}
