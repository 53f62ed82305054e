//! Whole-set graph checks run after every node compiled: nodes no path reaches, loops that never wait
//! for the caller, and variables read where some path into the node never set them.

use crate::error::ValidationError;
use crate::model::BUILTIN_VARIABLES;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A node of the whole set: (flow, node).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    pub flow: String,
    pub node: String,
}

impl NodeId {
    pub fn new(flow: &str, node: &str) -> Self {
        Self {
            flow: flow.to_string(),
            node: node.to_string(),
        }
    }
}

/// A transition and the variables it sets on the way (a collect sets its variable only on success).
#[derive(Debug, Clone)]
pub struct Edge {
    pub to: NodeId,
    pub defines: Vec<String>,
}

#[derive(Debug)]
struct GraphNode {
    file: String,
    line: u32,
    waits: bool,
    edges: Vec<Edge>,
    /// Variables read, with the line that reads them.
    uses: Vec<(String, u32)>,
}

/// The transition graph of a whole flow set.
#[derive(Debug, Default)]
pub struct FlowGraph {
    nodes: BTreeMap<NodeId, GraphNode>,
    starts: BTreeMap<String, NodeId>,
}

impl FlowGraph {
    pub fn add_node(
        &mut self,
        id: NodeId,
        file: &str,
        line: u32,
        waits: bool,
        edges: Vec<Edge>,
        uses: Vec<(String, u32)>,
    ) {
        self.nodes.insert(
            id,
            GraphNode {
                file: file.to_string(),
                line,
                waits,
                edges,
                uses,
            },
        );
    }

    pub fn add_start(&mut self, flow: &str, node: &str) {
        self.starts.insert(flow.to_string(), NodeId::new(flow, node));
    }
}

/// Runs every graph check, appending errors.
pub fn check(graph: &FlowGraph, errors: &mut Vec<ValidationError>) {
    unreachable_nodes(graph, errors);
    instant_loops(graph, errors);
    unset_variables(graph, errors);
}

fn error(node: &NodeId, at: &GraphNode, line: u32, message: String) -> ValidationError {
    ValidationError::new(&at.file, Some(line), Some(&node.node), message)
}

/// Every flow's start is an entry (any flow may be the one a number is routed to).
fn unreachable_nodes(graph: &FlowGraph, errors: &mut Vec<ValidationError>) {
    let mut seen: BTreeSet<&NodeId> = BTreeSet::new();
    let mut queue: VecDeque<&NodeId> = graph.starts.values().collect();
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(node) = graph.nodes.get(id) {
            queue.extend(node.edges.iter().map(|e| &e.to));
        }
    }
    for (id, node) in &graph.nodes {
        // Without a start the flow already has an error; every node would be unreachable.
        if graph.starts.contains_key(&id.flow) && !seen.contains(id) {
            errors.push(error(
                id,
                node,
                node.line,
                "unreachable: no path from the flow's start leads here".into(),
            ));
        }
    }
}

/// Cycles made only of nodes that never wait (branch, set, goto, lookup, webhook) would spin forever.
/// Finds strongly connected components of that subgraph with Tarjan's algorithm.
fn instant_loops(graph: &FlowGraph, errors: &mut Vec<ValidationError>) {
    let instant: Vec<&NodeId> = graph
        .nodes
        .iter()
        .filter(|(_, n)| !n.waits)
        .map(|(id, _)| id)
        .collect();
    let index_of: BTreeMap<&NodeId, usize> = instant.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let successors: Vec<Vec<usize>> = instant
        .iter()
        .map(|id| {
            graph.nodes.get(*id).map_or_else(Vec::new, |n| {
                n.edges
                    .iter()
                    .filter_map(|e| index_of.get(&e.to).copied())
                    .collect()
            })
        })
        .collect();
    for component in strongly_connected(&successors) {
        let self_loop = component.len() == 1
            && component
                .first()
                .is_some_and(|&i| successors.get(i).is_some_and(|s| s.contains(&i)));
        if component.len() < 2 && !self_loop {
            continue;
        }
        let mut ids: Vec<&NodeId> = component
            .iter()
            .filter_map(|&i| instant.get(i).copied())
            .collect();
        ids.sort();
        let Some(first) = ids.first() else { continue };
        let Some(node) = graph.nodes.get(*first) else {
            continue;
        };
        let names: Vec<String> = ids
            .iter()
            .map(|id| {
                if id.flow == first.flow {
                    id.node.clone()
                } else {
                    format!("{}:{}", id.flow, id.node)
                }
            })
            .collect();
        errors.push(error(
            first,
            node,
            node.line,
            format!(
                "loop never waits for the caller through nodes {} (add a play, menu or collect to the loop)",
                names.join(", ")
            ),
        ));
    }
}

/// Tarjan's strongly connected components, iterative so deep graphs cannot overflow the stack.
/// Indexing is safe here: every successor index is below `successors.len()` by construction.
fn strongly_connected(successors: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = successors.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut components = Vec::new();
    let mut counter = 0;
    for root in 0..n {
        if index.get(root) != Some(&usize::MAX) {
            continue;
        }
        // (node, next successor position)
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&mut (v, ref mut pos)) = work.last_mut() {
            if *pos == 0 && index[v] == usize::MAX {
                index[v] = counter;
                low[v] = counter;
                counter += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            let succ = &successors[v];
            if let Some(&w) = succ.get(*pos) {
                *pos += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// Forward "definitely set" analysis: a variable may be read at a node only if every path from an entry
/// sets it. Entries are the starts of flows no goto leads to; they begin with the built-in variables.
fn unset_variables(graph: &FlowGraph, errors: &mut Vec<ValidationError>) {
    let goto_targets: BTreeSet<&str> = graph
        .nodes
        .iter()
        .flat_map(|(id, n)| {
            n.edges
                .iter()
                .filter(move |e| e.to.flow != id.flow)
                .map(|e| e.to.flow.as_str())
        })
        .collect();
    let builtins: BTreeSet<String> = BUILTIN_VARIABLES.iter().map(|s| s.to_string()).collect();
    let mut defined: BTreeMap<&NodeId, BTreeSet<String>> = BTreeMap::new();
    let mut work: VecDeque<&NodeId> = VecDeque::new();
    for (flow, start) in &graph.starts {
        if !goto_targets.contains(flow.as_str()) {
            defined.insert(start, builtins.clone());
            work.push_back(start);
        }
    }
    while let Some(id) = work.pop_front() {
        let Some(node) = graph.nodes.get(id) else { continue };
        let Some(here) = defined.get(id).cloned() else {
            continue;
        };
        for edge in &node.edges {
            let mut out = here.clone();
            out.extend(edge.defines.iter().cloned());
            let Some((target_id, _)) = graph.nodes.get_key_value(&edge.to) else {
                continue;
            };
            let changed = match defined.get_mut(target_id) {
                None => {
                    defined.insert(target_id, out);
                    true
                }
                Some(existing) => {
                    let before = existing.len();
                    existing.retain(|v| out.contains(v));
                    existing.len() != before
                }
            };
            if changed {
                work.push_back(target_id);
            }
        }
    }
    for (id, node) in &graph.nodes {
        let Some(here) = defined.get(id) else { continue };
        for (var, line) in &node.uses {
            if !here.contains(var) {
                errors.push(error(
                    id,
                    node,
                    *line,
                    format!("variable {var:?} is not set on every path to this node"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_cycles_and_self_loops() {
        let succ = vec![vec![1], vec![0], vec![2], vec![]];
        let mut comps: Vec<Vec<usize>> = strongly_connected(&succ)
            .into_iter()
            .map(|mut c| {
                c.sort();
                c
            })
            .collect();
        comps.sort();
        assert_eq!(comps, vec![vec![0, 1], vec![2], vec![3]]);
    }

    proptest! {
        #[test]
        fn components_partition_the_nodes(edges in proptest::collection::vec((0usize..12, 0usize..12), 0..40)) {
            let mut succ = vec![Vec::new(); 12];
            for (a, b) in edges {
                succ[a].push(b);
            }
            let mut all: Vec<usize> = strongly_connected(&succ).into_iter().flatten().collect();
            all.sort();
            prop_assert_eq!(all, (0..12).collect::<Vec<_>>());
        }
    }
}
