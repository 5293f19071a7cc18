//! Token-level checks: the limits and the `TabError` of CPython's tokenizer, and what one pass
//! over the tokens tells about the tree.

use ruff_python_ast::token::TokenKind;
use ruff_python_parser::Parsed;
use ruff_text_size::Ranged;

use crate::RawDiagnostic;

/// CPython's tokenizer limit on open brackets (`MAXLEVEL`).
const MAX_PAREN_LEVEL: usize = 200;
/// CPython's tokenizer limit on indentation levels (`MAXINDENT`, the module level included).
const MAX_INDENT_LEVEL: usize = 99;

/// What one pass over the tokens tells about the tree.
pub(super) struct TokenFacts {
    /// An upper bound of the tree depth: every nested expression node takes at least one
    /// token of its logical line, every nested statement one indentation level (two
    /// counting a simple statement after `:` on the same line).
    pub(super) depth_bound: usize,
    /// The file has a `global` or `nonlocal` statement.
    pub(super) has_declarations: bool,
    /// The file has a `nonlocal` statement (which needs every scope's bindings).
    pub(super) has_nonlocal: bool,
}

/// Bracket nesting and indentation depth limits of CPython's tokenizer, plus [`TokenFacts`].
pub(super) fn check_token_limits<T>(
    parsed: &Parsed<T>,
    diagnostics: &mut Vec<RawDiagnostic>,
) -> TokenFacts {
    let too_deep = TokenFacts {
        depth_bound: usize::MAX,
        has_declarations: true,
        has_nonlocal: true,
    };
    let mut has_declarations = false;
    let mut has_nonlocal = false;
    let mut paren_level = 0usize;
    let mut indent_level = 0usize;
    let mut max_indent = 0usize;
    let mut line_tokens = 0usize;
    let mut max_line_tokens = 0usize;
    for token in parsed.tokens().iter() {
        line_tokens += 1;
        match token.kind() {
            TokenKind::Newline => {
                max_line_tokens = max_line_tokens.max(line_tokens);
                line_tokens = 0;
            }
            TokenKind::Lpar | TokenKind::Lsqb | TokenKind::Lbrace => {
                paren_level += 1;
                if paren_level > MAX_PAREN_LEVEL {
                    diagnostics.push(RawDiagnostic::new(
                        token.start(),
                        "too many nested parentheses",
                    ));
                    return too_deep;
                }
            }
            TokenKind::Rpar | TokenKind::Rsqb | TokenKind::Rbrace => {
                paren_level = paren_level.saturating_sub(1);
            }
            TokenKind::Indent => {
                indent_level += 1;
                max_indent = max_indent.max(indent_level);
                if indent_level >= MAX_INDENT_LEVEL {
                    diagnostics.push(RawDiagnostic::new(
                        token.start(),
                        "too many levels of indentation",
                    ));
                    return too_deep;
                }
            }
            TokenKind::Dedent => indent_level = indent_level.saturating_sub(1),
            TokenKind::Global => has_declarations = true,
            TokenKind::Nonlocal => {
                has_declarations = true;
                has_nonlocal = true;
            }
            _ => {}
        }
    }
    TokenFacts {
        depth_bound: max_line_tokens.max(line_tokens) + 2 * (max_indent + 1),
        has_declarations,
        has_nonlocal,
    }
}
/// CPython's `TabError`: indentation must compare the same with tabs worth 8 columns and
/// with tabs worth 1 column. ruff's lexer is more lenient here.
pub(super) fn check_tab_consistency<T>(
    source: &str,
    parsed: &Parsed<T>,
    diagnostics: &mut Vec<RawDiagnostic>,
) {
    if !source.contains('\t') {
        return;
    }
    let bytes = source.as_bytes();
    // Stacks of (col, altcol) per indentation level; level 0 is the module.
    let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
    let mut at_line_start = true;
    for token in parsed.tokens().iter() {
        match token.kind() {
            TokenKind::Newline => {
                at_line_start = true;
                continue;
            }
            TokenKind::Indent
            | TokenKind::Dedent
            | TokenKind::NonLogicalNewline
            | TokenKind::Comment
            | TokenKind::EndOfFile => continue,
            _ => {}
        }
        if !at_line_start {
            continue;
        }
        at_line_start = false;
        let Some((col, altcol)) = line_indentation(bytes, token.start().to_usize()) else {
            continue;
        };
        if is_inconsistent(&mut stack, col, altcol) {
            diagnostics.push(RawDiagnostic::new(
                token.start(),
                "inconsistent use of tabs and spaces in indentation",
            ));
            return;
        }
    }
}

/// The (col, altcol) indentation of the line holding `offset`, or `None` on a continuation
/// line (`\` before it), which is not an indentation. The indentation is the line's leading
/// whitespace, whatever token comes first (after an indentation error ruff may start the line
/// with an error token).
fn line_indentation(bytes: &[u8], offset: usize) -> Option<(usize, usize)> {
    let start = offset.min(bytes.len());
    let line_start = bytes[..start]
        .iter()
        .rposition(|&b| b == b'\n' || b == b'\r')
        .map_or(0, |p| p + 1);
    let (mut col, mut altcol) = (0usize, 0usize);
    for &b in &bytes[line_start..] {
        match b {
            b' ' => {
                col += 1;
                altcol += 1;
            }
            b'\t' => {
                col = (col / 8 + 1) * 8;
                altcol += 1;
            }
            b'\x0c' => {
                col = 0;
                altcol = 0;
            }
            _ => break,
        }
    }
    if line_start > 0 && bytes[..line_start].ends_with(b"\\\n") {
        return None;
    }
    Some((col, altcol))
}

/// Compares a line's indentation with the stack of open levels as CPython's tokenizer does
/// (pushing an indent, popping dedents): true when tabs-as-8 and tabs-as-1 disagree.
fn is_inconsistent(stack: &mut Vec<(usize, usize)>, col: usize, altcol: usize) -> bool {
    let (top_col, top_alt) = stack.last().copied().unwrap_or((0, 0));
    if col == top_col {
        altcol != top_alt
    } else if col > top_col {
        stack.push((col, altcol));
        altcol <= top_alt
    } else {
        while stack.len() > 1 && stack.last().is_some_and(|&(c, _)| col < c) {
            stack.pop();
        }
        stack.last().is_some_and(|&(c, a)| c == col && a != altcol)
    }
}
