//! CPython's compiler recursion limit, and the stack the deep walks of the engine need.

use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{Expr, Stmt};
use ruff_text_size::{Ranged, TextSize};

/// Deepest chain of nested statements and expressions CPython 3.11 compiles (measured:
/// `x = -…-1` with 2989 minus signs compiles, 2990 raise "maximum recursion depth exceeded
/// during compilation").
pub(super) const MAX_AST_DEPTH: usize = 2991;
/// Stack kept free before a recursive step, and the size of each extra stack segment.
pub(super) const STACK_RED_ZONE: usize = 1024 * 1024;
pub(super) const STACK_SEGMENT: usize = 4 * 1024 * 1024;
/// Stack reserved per token to drop a pathologically deep tree (Drop recurses).
const DROP_STACK_PER_TOKEN: usize = 512;

/// Drops a tree deeper than [`MAX_AST_DEPTH`]: dropping recurses once per level, so it gets a
/// stack that fits.
pub(super) fn drop_deep_tree<T>(tree: T, token_count: usize) {
    let stack = STACK_SEGMENT.saturating_add(token_count.saturating_mul(DROP_STACK_PER_TOKEN));
    stacker::grow(stack, move || drop(tree));
}

/// Where the statement/expression nesting first exceeds [`MAX_AST_DEPTH`], if it does.
pub(super) fn first_node_too_deep(body: &[Stmt]) -> Option<TextSize> {
    struct DepthWalker {
        depth: usize,
        found: Option<TextSize>,
    }
    impl DepthWalker {
        fn enter(&mut self, start: TextSize, walk: impl FnOnce(&mut Self)) {
            if self.found.is_some() {
                return;
            }
            self.depth += 1;
            if self.depth > MAX_AST_DEPTH {
                self.found = Some(start);
            } else {
                stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || walk(self));
            }
            self.depth -= 1;
        }
    }
    impl<'a> Visitor<'a> for DepthWalker {
        fn visit_stmt(&mut self, stmt: &'a Stmt) {
            self.enter(stmt.start(), |this| visitor::walk_stmt(this, stmt));
        }
        fn visit_expr(&mut self, expr: &'a Expr) {
            self.enter(expr.start(), |this| visitor::walk_expr(this, expr));
        }
    }
    let mut walker = DepthWalker {
        depth: 0,
        found: None,
    };
    walker.visit_body(body);
    walker.found
}
