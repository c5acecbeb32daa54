//! Reading node attributes on import and building them on export. Readers check the
//! attribute's declared type, so a float where an int belongs is an error naming the
//! attribute rather than a silently zero value.

use super::pb::attribute_proto::AttributeType;
use super::pb::{AttributeProto, TensorProto};

/// The attributes of one node, looked up by name.
#[derive(Clone, Copy)]
pub(crate) struct Attrs<'a>(pub &'a [AttributeProto]);

impl<'a> Attrs<'a> {
    fn find(&self, name: &str, want: AttributeType) -> Result<Option<&'a AttributeProto>, String> {
        let Some(a) = self.0.iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        if !a.ref_attr_name.is_empty() {
            return Err(format!(
                "attribute '{name}' refers to a function attribute, which glora does not support"
            ));
        }
        // Writers before IR 2 left the type unset; trust the field that is read then.
        if a.r#type == AttributeType::Undefined as i32 || a.r#type == want as i32 {
            return Ok(Some(a));
        }
        let found = AttributeType::try_from(a.r#type)
            .map(|t| t.as_str_name().to_string())
            .unwrap_or_else(|_| format!("type {}", a.r#type));
        Err(format!(
            "attribute '{name}' should be {} but is {found}",
            want.as_str_name()
        ))
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, String> {
        Ok(self.find(name, AttributeType::Int)?.map(|a| a.i))
    }

    pub fn float(&self, name: &str) -> Result<Option<f32>, String> {
        Ok(self.find(name, AttributeType::Float)?.map(|a| a.f))
    }

    pub fn ints(&self, name: &str) -> Result<Option<&'a [i64]>, String> {
        Ok(self
            .find(name, AttributeType::Ints)?
            .map(|a| a.ints.as_slice()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<&'a [f32]>, String> {
        Ok(self
            .find(name, AttributeType::Floats)?
            .map(|a| a.floats.as_slice()))
    }

    pub fn string(&self, name: &str) -> Result<Option<&'a str>, String> {
        match self.find(name, AttributeType::String)? {
            None => Ok(None),
            Some(a) => std::str::from_utf8(&a.s)
                .map(Some)
                .map_err(|_| format!("attribute '{name}' is not valid UTF-8")),
        }
    }

    pub fn tensor(&self, name: &str) -> Result<Option<&'a TensorProto>, String> {
        match self.find(name, AttributeType::Tensor)? {
            None => Ok(None),
            Some(a) => {
                a.t.as_ref()
                    .map(Some)
                    .ok_or_else(|| format!("attribute '{name}' holds no tensor"))
            }
        }
    }

    /// An int attribute that must be 0 or 1.
    pub fn flag(&self, name: &str) -> Result<Option<bool>, String> {
        match self.int(name)? {
            None => Ok(None),
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            Some(v) => Err(format!("attribute '{name}' must be 0 or 1, got {v}")),
        }
    }

    /// An ints attribute whose entries are sizes, counts or indices (never negative).
    pub fn sizes(&self, name: &str) -> Result<Option<Vec<usize>>, String> {
        match self.ints(name)? {
            None => Ok(None),
            Some(v) => v
                .iter()
                .map(|&x| {
                    usize::try_from(x)
                        .map_err(|_| format!("attribute '{name}' has a negative entry {x}"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
        }
    }
}

pub(crate) fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

pub(crate) fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

pub(crate) fn ints(name: &str, v: impl IntoIterator<Item = i64>) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::Ints as i32,
        ints: v.into_iter().collect(),
        ..Default::default()
    }
}

/// Sizes as an ints attribute.
pub(crate) fn sizes(name: &str, v: &[usize]) -> AttributeProto {
    ints(name, v.iter().map(|&x| x as i64))
}

pub(crate) fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::String as i32,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub(crate) fn tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::Tensor as i32,
        t: Some(t),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_check_the_declared_type() {
        let list = vec![
            int("axis", -1),
            float("eps", 0.5),
            ints("perm", [1, 0]),
            string("mode", "linear"),
        ];
        let a = Attrs(&list);
        assert_eq!(a.int("axis").unwrap(), Some(-1));
        assert_eq!(a.float("eps").unwrap(), Some(0.5));
        assert_eq!(a.sizes("perm").unwrap(), Some(vec![1, 0]));
        assert_eq!(a.string("mode").unwrap(), Some("linear"));
        assert_eq!(a.int("missing").unwrap(), None);
        let e = a.int("eps").unwrap_err();
        assert_eq!(e, "attribute 'eps' should be INT but is FLOAT");
        assert!(a.flag("axis").unwrap_err().contains("must be 0 or 1"));
        let neg = vec![ints("pads", [0, -1])];
        assert!(
            Attrs(&neg)
                .sizes("pads")
                .unwrap_err()
                .contains("negative entry -1")
        );
    }

    #[test]
    fn untyped_attributes_are_read_by_the_asked_type() {
        let list = vec![AttributeProto {
            name: "axis".into(),
            i: 2,
            ..Default::default()
        }];
        assert_eq!(Attrs(&list).int("axis").unwrap(), Some(2));
    }
}
