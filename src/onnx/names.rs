//! Unique names for nodes and values that import and export create (unnamed ONNX
//! nodes, the pieces of a decomposed op, constants of a decomposition). Seeded with
//! every name the model or graph already uses, so a created name never collides.

use std::collections::{HashMap, HashSet};

/// Hands out names that are not in use yet and remembers them.
#[derive(Debug, Default)]
pub(crate) struct NameGen {
    used: HashSet<String>,
    /// Per base, the suffix to try next, so that many names on one base stay cheap.
    next: HashMap<String, usize>,
}

impl NameGen {
    pub fn new<'a>(taken: impl IntoIterator<Item = &'a str>) -> NameGen {
        NameGen {
            used: taken.into_iter().map(str::to_string).collect(),
            next: HashMap::new(),
        }
    }

    /// `base` itself when it is free, else `base_1`, `base_2`, … ; the result is
    /// reserved.
    pub fn fresh(&mut self, base: &str) -> String {
        if self.used.insert(base.to_string()) {
            return base.to_string();
        }
        self.suffixed(base, 1)
    }

    /// `base_<n>` with the smallest `n` from 0 that is free: the form for names that
    /// are always numbered, such as unnamed nodes (`Add_0`, `Add_1`).
    pub fn numbered(&mut self, base: &str) -> String {
        self.suffixed(base, 0)
    }

    fn suffixed(&mut self, base: &str, first: usize) -> String {
        let mut i = self.next.get(base).copied().unwrap_or(first).max(first);
        loop {
            let name = format!("{base}_{i}");
            i += 1;
            if self.used.insert(name.clone()) {
                self.next.insert(base.to_string(), i);
                return name;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_names_skip_taken_ones() {
        let mut n = NameGen::new(["a", "a_1", "Add_0"]);
        assert_eq!(n.fresh("b"), "b");
        assert_eq!(n.fresh("b"), "b_1");
        assert_eq!(n.fresh("a"), "a_2");
        assert_eq!(n.numbered("Add"), "Add_1");
        assert_eq!(n.numbered("Add"), "Add_2");
        assert_eq!(n.numbered("Mul"), "Mul_0");
    }
}
