//! The entrypoint's signature, read from the tree for [`EntrypointSpec::check`].
//!
//! [`EntrypointSpec::check`]: crate::entrypoint::EntrypointSpec::check

use ruff_python_ast::{self as ast, ModModule, Stmt};

use crate::entrypoint::Signature;

/// The last module-level `def NAME` (also inside module-level `if`/`try`/`with` blocks).
pub(super) fn find_entrypoint(module: &ModModule, name: &str) -> Option<Signature> {
    fn search(body: &[Stmt], name: &str, found: &mut Option<Signature>) {
        for stmt in body {
            match stmt {
                Stmt::FunctionDef(def) if def.name.as_str() == name => {
                    let p = &def.parameters;
                    let positional = p.posonlyargs.iter().chain(p.args.iter());
                    *found = Some(Signature {
                        is_async: def.is_async,
                        required_positional: positional
                            .clone()
                            .filter(|a| a.default.is_none())
                            .count(),
                        total_positional: positional.count(),
                        has_varargs: p.vararg.is_some(),
                        required_keyword_only: p
                            .kwonlyargs
                            .iter()
                            .filter(|a| a.default.is_none())
                            .count(),
                    });
                }
                Stmt::If(s) => {
                    search(&s.body, name, found);
                    for clause in &s.elif_else_clauses {
                        search(&clause.body, name, found);
                    }
                }
                Stmt::Try(s) => {
                    search(&s.body, name, found);
                    for handler in &s.handlers {
                        let ast::ExceptHandler::ExceptHandler(h) = handler;
                        search(&h.body, name, found);
                    }
                    search(&s.orelse, name, found);
                    search(&s.finalbody, name, found);
                }
                Stmt::With(s) => search(&s.body, name, found),
                _ => {}
            }
        }
    }
    let mut found = None;
    search(&module.body, name, &mut found);
    found
}
