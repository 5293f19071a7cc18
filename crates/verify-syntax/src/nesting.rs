//! Refuses pathologically nested input before any parser builds a tree.
//!
//! Both engines build a tree, and a deep tree costs far more than its bytes: ruff's parser
//! recurses once per level (about 2.5 KiB of stack each, grown on the heap), tree-sitter
//! keeps a parse stack, and `x = ` followed by a million `-` took gigabytes. CPython 3.11
//! itself refuses every chain deeper than about 2992 levels (a `RecursionError` in the
//! compiler, or a `MemoryError` in its parser), so nothing it accepts is lost by refusing
//! deeper input early.
//!
//! This is one linear pass over the decoded text with memory bounded by the limits (never by
//! the input): a small tokenizer (strings, f-string fields, comments, continuation lines)
//! feeds an operator-precedence machine that computes, per bracket level, how deep the
//! expression tree being written is — the shunting-yard stack of pending operators (each an
//! ancestor of what follows), plus the depth of the operand built so far (left-nested chains
//! such as `a.b.c`, `f()()` and `1+1+1`). Flat constructs (`and`/`or` chains, comparison
//! chains, tuples, implicit string concatenation, or-patterns, dotted imports) stay flat.
//! The estimate never exceeds the real depth of ruff's tree by more than a few levels per
//! bracket, and the limit is twice CPython's, so near the limit the exact walk of the ruff
//! engine decides, as before.

use crate::RawDiagnostic;

/// Nesting depth refused before parsing: twice CPython 3.11's compiler limit (2991), so the
/// exact check after the parse decides everything CPython could accept.
pub(crate) const MAX_SCAN_DEPTH: u32 = 2 * 2991;
/// CPython's tokenizer limit on open brackets (`MAXLEVEL`); f-string fields count.
const MAX_PAREN_LEVEL: usize = 200;
/// CPython's tokenizer limit on indentation levels (`MAXINDENT`, the module level included).
const MAX_INDENT_LEVEL: usize = 99;

/// The first place where `text` nests beyond the limits, as CPython words it.
pub(crate) fn check(text: &str) -> Option<RawDiagnostic> {
    let mut scanner = Scanner::new(text);
    scanner.run().err()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Prefix,
    Binary,
    /// An n-ary node (`BoolOp`, `Compare`, `MatchOr`): repeated operators stay one level.
    Nary(u8),
    /// `if` of a conditional expression, waiting for its `else`.
    If,
    Else,
}

#[derive(Clone, Copy)]
struct Op {
    prec: u8,
    kind: OpKind,
    /// Deepest operand folded into this operator so far.
    acc: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Statement,
    /// `(`, `[`, `{`; `node` when it is a node of its own (call, subscript, list, dict).
    Bracket {
        close: u8,
        node: bool,
    },
    /// The parameters of a `lambda`, up to its `:`.
    LambdaParams,
    /// The text of an f-string (or t-string).
    FString {
        quote: u8,
        triple: bool,
        raw: bool,
    },
    /// A replacement field `{…}` of an f-string; `spec` once its `:` was seen.
    Field {
        spec: bool,
    },
}

struct Frame {
    kind: FrameKind,
    /// Tree levels above this frame's expressions.
    base: u32,
    /// Depth of the operand before an opening call/subscript bracket (its callee).
    callee: u32,
    ops: Vec<Op>,
    /// Depth of the operand just read, if the next token is expected to be an operator.
    current: Option<u32>,
    /// Deepest finished element of this frame.
    max_child: u32,
    /// A `for` was seen: the next `in` and any `if` are clause keywords.
    comprehension: bool,
    expect_in: bool,
    saw_comma: bool,
    /// Deepest level an operator pushed so far reaches (its left operand below it).
    worst: u32,
}

impl Frame {
    fn new(kind: FrameKind, base: u32, callee: u32) -> Self {
        Self {
            kind,
            base,
            callee,
            ops: Vec::new(),
            current: None,
            max_child: 0,
            comprehension: false,
            expect_in: false,
            saw_comma: false,
            worst: 0,
        }
    }

    fn depth(&self) -> u32 {
        let ops = u32::try_from(self.ops.len()).unwrap_or(u32::MAX);
        self.base
            .saturating_add(ops)
            .saturating_add(self.current.unwrap_or(0))
            .max(self.worst)
    }

    /// Records that the operator at stack index `index` has an operand `acc` levels deep.
    fn note(&mut self, index: usize, acc: u32) {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let reach = self
            .base
            .saturating_add(index)
            .saturating_add(1)
            .saturating_add(acc);
        self.worst = self.worst.max(reach);
    }

    fn reduce_top(&mut self) {
        if let Some(op) = self.ops.pop() {
            let operand = self.current.unwrap_or(0);
            self.current = Some(op.acc.max(operand).saturating_add(1));
        }
    }

    /// Ends the element being read (at `,`, `:`, `=`, a clause keyword, a closer).
    fn finish(&mut self) {
        while !self.ops.is_empty() {
            self.reduce_top();
        }
        if let Some(depth) = self.current.take() {
            self.max_child = self.max_child.max(depth);
        }
    }

    fn binary(&mut self, prec: u8, kind: OpKind, right_assoc: bool) {
        let Some(mut left) = self.current else {
            return; // an operator where an operand belongs: a syntax error, no nesting
        };
        while let Some(top) = self.ops.last().copied() {
            if let (OpKind::Nary(a), OpKind::Nary(b)) = (top.kind, kind) {
                if a == b && top.prec == prec {
                    let index = self.ops.len() - 1;
                    self.ops[index].acc = top.acc.max(left);
                    self.note(index, left);
                    self.current = None;
                    return;
                }
            }
            let reduce = top.prec > prec || (top.prec == prec && !right_assoc);
            if !reduce {
                break;
            }
            self.reduce_top();
            left = self.current.unwrap_or(0);
        }
        self.ops.push(Op {
            prec,
            kind,
            acc: left,
        });
        self.note(self.ops.len() - 1, left);
        self.current = None;
    }

    fn prefix(&mut self, prec: u8) {
        if self.current.is_some() {
            return; // e.g. `a not b`: an error, no nesting
        }
        self.ops.push(Op {
            prec,
            kind: OpKind::Prefix,
            acc: 0,
        });
    }

    fn operand(&mut self, depth: u32) {
        // An operand after an operand: implicit string concatenation, a soft keyword, or an
        // error; none of them nests.
        self.current = Some(self.current.map_or(depth, |d| d.max(depth)));
    }

    /// `else` of a conditional expression: true when an `if` is pending in this frame.
    fn else_of_if(&mut self) -> bool {
        let Some(at) = self.ops.iter().rposition(|op| op.kind == OpKind::If) else {
            return false;
        };
        while self.ops.len() > at + 1 {
            self.reduce_top();
        }
        let test = self.current.take().unwrap_or(0);
        self.ops[at].acc = self.ops[at].acc.max(test);
        self.ops[at].kind = OpKind::Else;
        self.note(at, test);
        true
    }
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    frames: Vec<Frame>,
    /// Open brackets and f-string fields (CPython's paren level).
    paren_level: usize,
    indents: Vec<usize>,
    at_line_start: bool,
    /// Statement-wide modes, reset at each logical line.
    import_line: bool,
    pattern_line: bool,
    first_word: bool,
    /// The previous word was `is` (so `not` is part of `is not`), or `not` after an operand
    /// (so `in` is part of `not in`).
    after_is: bool,
    after_not: bool,
    after_yield: bool,
}

type Scan = Result<(), RawDiagnostic>;

fn too_deep(offset: usize) -> RawDiagnostic {
    // CPython's words for the same refusal (its compiler's, at half this depth).
    RawDiagnostic::at(
        offset,
        "too complex: maximum recursion depth exceeded during compilation",
    )
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            frames: vec![Frame::new(FrameKind::Statement, 0, 0)],
            paren_level: 0,
            indents: Vec::new(),
            at_line_start: true,
            import_line: false,
            pattern_line: false,
            first_word: true,
            after_is: false,
            after_not: false,
            after_yield: false,
        }
    }

    fn top(&mut self) -> &mut Frame {
        // The statement frame is never popped.
        let last = self.frames.len() - 1;
        &mut self.frames[last]
    }

    fn peek(&self, ahead: usize) -> u8 {
        self.bytes.get(self.pos + ahead).copied().unwrap_or(0)
    }

    fn check_depth(&mut self, at: usize) -> Scan {
        if self.top().depth() > MAX_SCAN_DEPTH {
            return Err(too_deep(at));
        }
        Ok(())
    }

    fn run(&mut self) -> Scan {
        if self.text.starts_with('\u{feff}') {
            self.pos = 3;
        }
        while self.pos < self.bytes.len() {
            match self.top().kind {
                FrameKind::FString { quote, triple, raw } => {
                    self.fstring_text(quote, triple, raw)?
                }
                FrameKind::Field { spec: true } => self.spec_text()?,
                _ => self.token()?,
            }
        }
        Ok(())
    }

    fn push_frame(&mut self, kind: FrameKind, node: bool, callee: u32, at: usize) -> Scan {
        let parent = self.top();
        let ops = u32::try_from(parent.ops.len()).unwrap_or(u32::MAX);
        let base = parent
            .base
            .saturating_add(ops)
            .saturating_add(u32::from(node));
        parent.current = None;
        if matches!(kind, FrameKind::Bracket { .. } | FrameKind::Field { .. }) {
            self.paren_level += 1;
            if self.paren_level > MAX_PAREN_LEVEL {
                return Err(RawDiagnostic::at(at, "too many nested parentheses"));
            }
        }
        if base > MAX_SCAN_DEPTH {
            return Err(too_deep(at));
        }
        self.frames.push(Frame::new(kind, base, callee));
        Ok(())
    }

    /// Pops the top frame; its value becomes the parent's operand.
    fn pop_frame(&mut self, at: usize) -> Scan {
        if self.frames.len() <= 1 {
            return Ok(());
        }
        let Some(mut frame) = self.frames.pop() else {
            return Ok(());
        };
        frame.finish();
        if matches!(
            frame.kind,
            FrameKind::Bracket { .. } | FrameKind::Field { .. }
        ) {
            self.paren_level = self.paren_level.saturating_sub(1);
        }
        let inner = frame.max_child;
        match frame.kind {
            FrameKind::Bracket { node, .. } => {
                let own = node || frame.saw_comma || frame.comprehension || inner == 0;
                let depth = if node {
                    frame.callee.max(inner).saturating_add(1)
                } else {
                    inner.saturating_add(u32::from(own))
                };
                self.top().operand(depth);
            }
            FrameKind::LambdaParams => self.top().prefix(1),
            FrameKind::FString { .. } => self.top().operand(inner.saturating_add(1)),
            FrameKind::Field { .. } => {
                // The field's value is an element of the f-string around it.
                let parent = self.top();
                parent.max_child = parent.max_child.max(inner);
            }
            FrameKind::Statement => {}
        }
        self.check_depth(at)
    }

    /// Pops frames up to and including the innermost bracket (a closer).
    fn close_bracket(&mut self, at: usize) -> Scan {
        let has_bracket = self
            .frames
            .iter()
            .rev()
            .take_while(|f| !matches!(f.kind, FrameKind::Field { .. } | FrameKind::FString { .. }))
            .any(|f| matches!(f.kind, FrameKind::Bracket { .. }));
        if !has_bracket {
            return Ok(()); // a stray closer: a syntax error, no nesting
        }
        while let Some(frame) = self.frames.last() {
            let bracket = matches!(frame.kind, FrameKind::Bracket { .. });
            self.pop_frame(at)?;
            if bracket {
                break;
            }
        }
        Ok(())
    }

    fn end_logical_line(&mut self) {
        while self.frames.len() > 1 {
            let _ = self.pop_frame(self.pos);
        }
        self.paren_level = 0;
        let statement = self.top();
        statement.finish();
        statement.max_child = 0;
        statement.comprehension = false;
        statement.expect_in = false;
        self.at_line_start = true;
        self.import_line = false;
        self.pattern_line = false;
        self.first_word = true;
    }

    /// Indentation of a logical line that starts at `self.pos`.
    fn line_start(&mut self) -> Scan {
        self.at_line_start = false;
        let line = self.pos;
        let mut width = 0usize;
        let mut i = self.pos;
        while let Some(&b) = self.bytes.get(i) {
            match b {
                b' ' => width += 1,
                b'\t' => width = (width / 8 + 1) * 8,
                b'\x0c' => width = 0,
                _ => break,
            }
            i += 1;
        }
        self.pos = i;
        if matches!(self.peek(0), b'\n' | b'\r' | b'#' | 0) {
            self.at_line_start = true; // blank or comment-only: no indentation token
            return Ok(());
        }
        if self.peek(0) == b'\\' && matches!(self.peek(1), b'\n' | b'\r') {
            return Ok(());
        }
        while self.indents.last().is_some_and(|&top| top > width) {
            self.indents.pop();
        }
        if width > 0 && self.indents.last().is_none_or(|&top| top < width) {
            self.indents.push(width);
            if self.indents.len() >= MAX_INDENT_LEVEL {
                return Err(RawDiagnostic::at(line, "too many levels of indentation"));
            }
        }
        let base = u32::try_from(self.indents.len()).unwrap_or(u32::MAX);
        self.frames[0].base = base;
        Ok(())
    }

    fn token(&mut self) -> Scan {
        if self.at_line_start && self.frames.len() == 1 {
            self.line_start()?;
            if self.pos >= self.bytes.len() {
                return Ok(());
            }
        }
        let at = self.pos;
        let b = self.peek(0);
        match b {
            b' ' | b'\t' | b'\x0c' => self.pos += 1,
            b'\n' | b'\r' => {
                self.pos += 1;
                if self.paren_level == 0 {
                    self.end_logical_line();
                }
            }
            b'#' => {
                while !matches!(self.peek(0), b'\n' | b'\r' | 0) {
                    self.pos += 1;
                }
            }
            b'\\' => {
                self.pos += 1;
                if self.peek(0) == b'\r' {
                    self.pos += 1;
                }
                if self.peek(0) == b'\n' {
                    self.pos += 1;
                }
            }
            b'"' | b'\'' => self.string(at, b, false, false)?,
            b'0'..=b'9' => {
                self.number();
                self.operand(at)?;
            }
            b'.' if self.peek(1).is_ascii_digit() => {
                self.number();
                self.operand(at)?;
            }
            _ if b == b'_' || b.is_ascii_alphabetic() || b >= 0x80 => self.word(at)?,
            _ => self.operator(at)?,
        }
        Ok(())
    }

    fn operand(&mut self, at: usize) -> Scan {
        self.first_word = false;
        self.after_is = false;
        self.after_not = false;
        self.after_yield = false;
        self.top().operand(1);
        self.check_depth(at)
    }

    fn number(&mut self) {
        let hex =
            self.peek(0) == b'0' && matches!(self.peek(1), b'x' | b'X' | b'b' | b'B' | b'o' | b'O');
        while let Some(&c) = self.bytes.get(self.pos) {
            if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' {
                self.pos += 1;
                if !hex && matches!(c, b'e' | b'E') && matches!(self.peek(0), b'+' | b'-') {
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    fn word(&mut self, at: usize) -> Scan {
        let start = self.pos;
        while let Some(&c) = self.bytes.get(self.pos) {
            if c == b'_' || c.is_ascii_alphanumeric() || c >= 0x80 {
                self.pos += 1;
            } else {
                break;
            }
        }
        let word = self.text.get(start..self.pos).unwrap_or_default();
        if word.len() <= 3 && matches!(self.peek(0), b'"' | b'\'') {
            let lower = word.to_ascii_lowercase();
            if lower
                .bytes()
                .all(|c| matches!(c, b'r' | b'b' | b'u' | b'f' | b't'))
            {
                let interpolated = lower.contains('f') || lower.contains('t');
                let quote = self.peek(0);
                return self.string(at, quote, interpolated, lower.contains('r'));
            }
        }
        let first = std::mem::replace(&mut self.first_word, false);
        let after_is = std::mem::replace(&mut self.after_is, false);
        let after_not = std::mem::replace(&mut self.after_not, false);
        let after_yield = std::mem::replace(&mut self.after_yield, false);
        let expecting_operator = self.top().current.is_some();
        match word {
            "not" if after_is => {}
            "not" if expecting_operator => {
                self.top().binary(6, OpKind::Nary(1), false);
                self.after_not = true;
            }
            "not" => self.top().prefix(5),
            "in" if after_not => {}
            "in" if self.top().expect_in => {
                let frame = self.top();
                frame.expect_in = false;
                frame.finish();
            }
            "in" => self.top().binary(6, OpKind::Nary(1), false),
            "is" => {
                self.top().binary(6, OpKind::Nary(1), false);
                self.after_is = true;
            }
            "and" => self.top().binary(4, OpKind::Nary(2), false),
            "or" => self.top().binary(3, OpKind::Nary(3), false),
            "if" if expecting_operator && !self.top().comprehension => {
                self.top().binary(2, OpKind::If, true);
            }
            "else" => {
                if !self.top().else_of_if() {
                    self.top().finish();
                }
            }
            "lambda" => self.push_frame(FrameKind::LambdaParams, true, 0, at)?,
            "await" => self.top().prefix(15),
            "yield" => {
                self.top().prefix(0);
                self.after_yield = true;
            }
            "from" if after_yield => {}
            "for" => {
                let frame = self.top();
                frame.finish();
                frame.comprehension = true;
                frame.expect_in = true;
            }
            "import" | "from" if first || self.import_line => {
                self.top().finish();
                self.import_line = true;
            }
            "case" if first => self.pattern_line = true,
            "if" | "elif" | "while" | "with" | "as" | "def" | "class" | "return" | "del"
            | "pass" | "break" | "continue" | "raise" | "from" | "import" | "global"
            | "nonlocal" | "assert" | "try" | "except" | "finally" | "async" => {
                self.top().finish();
            }
            _ => {
                self.top().operand(1);
            }
        }
        self.check_depth(at)
    }

    fn operator(&mut self, at: usize) -> Scan {
        let three = self.bytes.get(self.pos..self.pos + 3).unwrap_or_default();
        let two = self.bytes.get(self.pos..self.pos + 2).unwrap_or_default();
        self.first_word = false;
        self.after_is = false;
        self.after_not = false;
        self.after_yield = false;
        let expecting_operator = self.top().current.is_some();
        if three == b"..." {
            self.pos += 3;
            self.top().operand(1);
            return self.check_depth(at);
        }
        if matches!(three, b"**=" | b"//=" | b">>=" | b"<<=") {
            self.pos += 3;
            self.top().finish();
            return Ok(());
        }
        let len2 = match two {
            b"+=" | b"-=" | b"*=" | b"/=" | b"%=" | b"&=" | b"|=" | b"^=" | b"@=" | b"->" => {
                self.pos += 2;
                self.top().finish();
                return Ok(());
            }
            b"**" | b"//" | b"<<" | b">>" | b"<=" | b">=" | b"==" | b"!=" | b":=" => true,
            _ => false,
        };
        if len2 {
            self.pos += 2;
            let frame = self.top();
            match two {
                b"**" if expecting_operator => frame.binary(14, OpKind::Binary, true),
                b"**" => frame.prefix(7),
                b"//" => frame.binary(12, OpKind::Binary, false),
                b"<<" | b">>" => frame.binary(10, OpKind::Binary, false),
                b":=" => frame.binary(0, OpKind::Binary, true),
                _ => frame.binary(6, OpKind::Nary(1), false),
            }
            return self.check_depth(at);
        }
        self.pos += 1;
        let b = two.first().copied().unwrap_or(0);
        match b {
            b'(' | b'[' | b'{' => {
                let close = match b {
                    b'(' => b')',
                    b'[' => b']',
                    _ => b'}',
                };
                let callee = self.top().current;
                let node = b != b'(' || callee.is_some();
                let node = if b == b'{' { true } else { node };
                self.push_frame(
                    FrameKind::Bracket { close, node },
                    node,
                    callee.unwrap_or(0),
                    at,
                )?;
            }
            b')' | b']' => self.close_bracket(at)?,
            b'}' => {
                if matches!(self.top().kind, FrameKind::Field { .. }) {
                    self.pop_frame(at)?;
                } else {
                    self.close_bracket(at)?;
                }
            }
            b',' => {
                let frame = self.top();
                frame.finish();
                frame.saw_comma = true;
            }
            b';' | b'=' => self.top().finish(),
            b':' => match self.top().kind {
                FrameKind::LambdaParams => self.pop_frame(at)?,
                FrameKind::Field { .. } => {
                    let frame = self.top();
                    frame.finish();
                    frame.kind = FrameKind::Field { spec: true };
                }
                _ => self.top().finish(),
            },
            b'!' if matches!(self.top().kind, FrameKind::Field { .. }) => self.top().finish(),
            b'.' if !self.import_line => {
                if let Some(depth) = self.top().current.as_mut() {
                    *depth = depth.saturating_add(1);
                }
            }
            b'-' | b'+' if !expecting_operator => self.top().prefix(13),
            b'~' => self.top().prefix(13),
            b'*' if !expecting_operator => self.top().prefix(7),
            b'-' | b'+' => self.top().binary(11, OpKind::Binary, false),
            b'*' | b'/' | b'%' | b'@' => self.top().binary(12, OpKind::Binary, false),
            b'|' if self.pattern_line => self.top().binary(7, OpKind::Nary(4), false),
            b'|' => self.top().binary(7, OpKind::Binary, false),
            b'^' => self.top().binary(8, OpKind::Binary, false),
            b'&' => self.top().binary(9, OpKind::Binary, false),
            b'<' | b'>' => self.top().binary(6, OpKind::Nary(1), false),
            _ => {
                // Multi-byte characters are words; anything else is an error token.
            }
        }
        self.check_depth(at)
    }

    /// A string literal starting at the quote under `self.pos`.
    fn string(&mut self, at: usize, quote: u8, interpolated: bool, raw: bool) -> Scan {
        let triple = self.peek(1) == quote && self.peek(2) == quote;
        self.pos += if triple { 3 } else { 1 };
        self.first_word = false;
        if interpolated {
            return self.push_frame(FrameKind::FString { quote, triple, raw }, true, 0, at);
        }
        loop {
            match self.peek(0) {
                0 if self.pos >= self.bytes.len() => break,
                b'\\' => self.pos += 2,
                b'\n' | b'\r' if !triple => break,
                c if c == quote => {
                    if !triple {
                        self.pos += 1;
                        break;
                    }
                    if self.peek(1) == quote && self.peek(2) == quote {
                        self.pos += 3;
                        break;
                    }
                    self.pos += 1;
                }
                _ => self.pos += 1,
            }
        }
        self.operand(at)
    }

    /// The literal text of an f-string, up to a replacement field or its end.
    fn fstring_text(&mut self, quote: u8, triple: bool, raw: bool) -> Scan {
        loop {
            let at = self.pos;
            match self.peek(0) {
                0 if self.pos >= self.bytes.len() => return self.pop_frame(at),
                // `\{` leaves the brace to start a field; `\N{…}` is a named character.
                b'\\' if matches!(self.peek(1), b'{' | b'}') => self.pos += 1,
                b'\\' if !raw && self.peek(1) == b'N' && self.peek(2) == b'{' => {
                    self.pos += 3;
                    while !matches!(self.peek(0), b'}' | b'\n' | 0) && self.peek(0) != quote {
                        self.pos += 1;
                    }
                    if self.peek(0) == b'}' {
                        self.pos += 1;
                    }
                }
                b'\\' => self.pos += 2,
                b'\n' | b'\r' if !triple => return self.pop_frame(at),
                b'{' if self.peek(1) == b'{' => self.pos += 2,
                b'}' if self.peek(1) == b'}' => self.pos += 2,
                b'{' => {
                    self.pos += 1;
                    return self.push_frame(FrameKind::Field { spec: false }, false, 0, at);
                }
                c if c == quote => {
                    if !triple {
                        self.pos += 1;
                        return self.pop_frame(at);
                    }
                    if self.peek(1) == quote && self.peek(2) == quote {
                        self.pos += 3;
                        return self.pop_frame(at);
                    }
                    self.pos += 1;
                }
                _ => self.pos += 1,
            }
        }
    }

    /// The format spec of a replacement field, up to a nested field or the field's end.
    fn spec_text(&mut self) -> Scan {
        loop {
            let at = self.pos;
            match self.peek(0) {
                0 if self.pos >= self.bytes.len() => return Ok(()),
                b'{' => {
                    self.pos += 1;
                    return self.push_frame(FrameKind::Field { spec: false }, false, 0, at);
                }
                b'}' => {
                    self.pos += 1;
                    return self.pop_frame(at);
                }
                b'\n' | b'\r' => {
                    // A spec cannot span lines in a single-quoted string: leave the string.
                    return self.pop_frame(at);
                }
                _ => self.pos += 1,
            }
        }
    }
}
