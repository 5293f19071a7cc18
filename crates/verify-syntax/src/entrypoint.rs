//! The Python-free entrypoint check: the module defines `def NAME(...)` at module level and it
//! can be called with the configured number of positional arguments.

/// What the entrypoint must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrypointSpec {
    /// The function name, e.g. `process_event`.
    pub name: String,
    /// How many positional arguments the caller passes (`process_event(event)` = 1).
    pub arity: usize,
}

impl EntrypointSpec {
    /// An entrypoint called with one positional argument (`process_event(event)`).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            arity: 1,
        }
    }

    #[must_use]
    pub fn with_arity(mut self, arity: usize) -> Self {
        self.arity = arity;
        self
    }

    /// Checks the last module-level definition of the entrypoint, if any.
    pub(crate) fn check(&self, found: Option<Signature>) -> Result<(), String> {
        let name = &self.name;
        let Some(signature) = found else {
            return Err(format!(
                "entrypoint '{name}' is not defined: expected a module-level 'def {name}(...)'"
            ));
        };
        if signature.is_async {
            return Err(format!(
                "entrypoint '{name}' is 'async def'; expected a plain 'def'"
            ));
        }
        let arity = self.arity;
        let accepts = signature.required_positional <= arity
            && (arity <= signature.total_positional || signature.has_varargs)
            && signature.required_keyword_only == 0;
        if accepts {
            Ok(())
        } else {
            Err(format!(
                "entrypoint '{name}' cannot be called with {arity} positional argument{s}: {detail}",
                s = if arity == 1 { "" } else { "s" },
                detail = signature.describe(),
            ))
        }
    }
}

/// The callable shape of a function definition, whatever parser found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Signature {
    pub(crate) is_async: bool,
    pub(crate) required_positional: usize,
    pub(crate) total_positional: usize,
    pub(crate) has_varargs: bool,
    pub(crate) required_keyword_only: usize,
}

impl Signature {
    fn describe(&self) -> String {
        let mut parts = vec![format!(
            "it takes {} required and {} optional positional parameter(s)",
            self.required_positional,
            self.total_positional - self.required_positional.min(self.total_positional)
        )];
        if self.has_varargs {
            parts.push("and *args".to_owned());
        }
        if self.required_keyword_only > 0 {
            parts.push(format!(
                "and {} required keyword-only parameter(s)",
                self.required_keyword_only
            ));
        }
        parts.join(" ")
    }
}
