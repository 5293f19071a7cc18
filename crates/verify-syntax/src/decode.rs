//! Source decoding the way CPython 3.11's `compile(bytes, …)` does it (PEP 263, PEP 3120).
//!
//! - A UTF-8 BOM selects UTF-8; a coding cookie that does not normalize to `utf-8` next to a
//!   BOM is an error ("encoding problem: X with BOM").
//! - The cookie is searched in line 1, and in line 2 only when line 1 holds nothing but a
//!   comment or whitespace, after CPython's newline translation (`\r\n`, `\r` -> `\n`, final
//!   `\n` added).
//! - An unknown encoding is an error; so is a byte sequence the encoding cannot decode.
//! - Without a cookie the source must be valid UTF-8. CPython 3.11 tolerates invalid UTF-8
//!   inside comments when compiling bytes; we do not (deliberately stricter, see the crate docs).

use std::borrow::Cow;

use bluegreen_core::Diagnostic;

use crate::python_codecs::PYTHON_CODECS;

/// Decoded source text, without any BOM; borrowed when the bytes already are UTF-8.
pub(crate) struct Decoded<'a> {
    pub(crate) text: Cow<'a, str>,
}

/// Decodes `source` or returns the diagnostic CPython's tokenizer would raise.
pub(crate) fn decode_source(source: &[u8]) -> Result<Decoded<'_>, Diagnostic> {
    // `<[u8]>::contains` is memchr; the position search runs only on the rare hit.
    if let Some(nul) = source.contains(&0).then(|| memchr_nul(source)).flatten() {
        let (line, column) = byte_position(source, nul);
        return Err(Diagnostic::new(
            line,
            column,
            "source code string cannot contain null bytes",
        ));
    }
    let (has_bom, body) = match source.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (true, rest),
        None => (false, source),
    };
    let cookie = find_cookie(body);
    let encoding = match (&cookie, has_bom) {
        (Some(cookie), true) if cookie.name != "utf-8" => {
            return Err(Diagnostic::new(
                cookie.line,
                1,
                format!("encoding problem: {} with BOM", cookie.name),
            ));
        }
        (Some(cookie), false) if cookie.name != "utf-8" => Some(cookie),
        _ => None,
    };
    let text = match encoding {
        None => Cow::Borrowed(decode_utf8(body)?),
        Some(cookie) => Cow::Owned(decode_with_codec(body, cookie)?),
    };
    // Only one BOM is a BOM; ruff's lexer would skip a second one, CPython rejects it.
    if text.starts_with('\u{feff}') {
        return Err(Diagnostic::new(
            1,
            1,
            "invalid non-printable character U+FEFF",
        ));
    }
    Ok(Decoded { text })
}

fn memchr_nul(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == 0)
}

/// 1-based line and column of a byte offset in undecoded source (column counts bytes).
fn byte_position(source: &[u8], offset: usize) -> (u32, u32) {
    let before = &source[..offset.min(source.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (saturate(line), saturate(column))
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn decode_utf8(body: &[u8]) -> Result<&str, Diagnostic> {
    match std::str::from_utf8(body) {
        Ok(text) => Ok(text),
        Err(error) => {
            let offset = error.valid_up_to();
            let (line, column) = byte_position(body, offset);
            let byte = body.get(offset).copied().unwrap_or(0);
            let reason = if error.error_len().is_none() {
                "unexpected end of data"
            } else if (0xC0..0xF8).contains(&byte) {
                "invalid continuation byte"
            } else {
                "invalid start byte"
            };
            Err(Diagnostic::new(
                line,
                column,
                format!("(unicode error) 'utf-8' codec can't decode byte 0x{byte:02x}: {reason}"),
            ))
        }
    }
}

struct Cookie {
    /// The name after CPython's `get_normal_name` (utf-8 and latin-1 spellings unified).
    name: String,
    line: u32,
}

/// The first two lines as CPython's tokenizer sees them: `\r\n` and `\r` become `\n`, and
/// exec input gets a final `\n` (`translate_newlines`).
fn first_two_lines(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len().min(256));
    let mut newlines = 0;
    let mut i = 0;
    while i < body.len() && newlines < 2 {
        match body[i] {
            b'\r' => {
                out.push(b'\n');
                newlines += 1;
                if body.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => {
                out.push(b'\n');
                newlines += 1;
            }
            b => out.push(b),
        }
        i += 1;
    }
    if i >= body.len() && out.last() != Some(&b'\n') {
        out.push(b'\n');
    }
    out
}

/// CPython's `check_coding_spec` over lines 1 and 2.
fn find_cookie(body: &[u8]) -> Option<Cookie> {
    let head = first_two_lines(body);
    let body = head.as_slice();
    let first_end = body.iter().position(|&b| b == b'\n')?;
    let first = &body[..first_end];
    match coding_spec(first) {
        LineSpec::Cookie(name) => return Some(Cookie { name, line: 1 }),
        LineSpec::Code => return None,
        LineSpec::CommentOrBlank => {}
    }
    let rest = &body[first_end + 1..];
    let second_end = rest.iter().position(|&b| b == b'\n')?;
    match coding_spec(&rest[..second_end + 1]) {
        LineSpec::Cookie(name) => Some(Cookie { name, line: 2 }),
        _ => None,
    }
}

enum LineSpec {
    Cookie(String),
    CommentOrBlank,
    Code,
}

/// CPython's `get_coding_spec` plus the "line holds only a comment" test of `check_coding_spec`.
fn coding_spec(line: &[u8]) -> LineSpec {
    let is_blank = |b: u8| b == b' ' || b == b'\t' || b == b'\x0c';
    // CPython scans positions `< size - 6`; line 1 comes without its `\n`, line 2 with it.
    let scan_len = line.len().saturating_sub(6);
    let mut i = 0;
    while i < scan_len {
        if line[i] == b'#' {
            break;
        }
        if !is_blank(line[i]) {
            return classify_without_cookie(line);
        }
        i += 1;
    }
    while i < scan_len {
        if line[i..].starts_with(b"coding") {
            let mut t = i + 6;
            if matches!(line.get(t), Some(b':' | b'=')) {
                t += 1;
                while matches!(line.get(t), Some(b' ' | b'\t')) {
                    t += 1;
                }
                let begin = t;
                while line.get(t).is_some_and(|&b| {
                    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
                }) {
                    t += 1;
                }
                if t > begin {
                    let raw = String::from_utf8_lossy(&line[begin..t]).into_owned();
                    return LineSpec::Cookie(normal_name(&raw));
                }
            }
        }
        i += 1;
    }
    classify_without_cookie(line)
}

fn classify_without_cookie(line: &[u8]) -> LineSpec {
    for &b in line {
        if b == b'#' || b == b'\n' || b == b'\r' {
            break;
        }
        if b != b' ' && b != b'\t' && b != b'\x0c' {
            return LineSpec::Code;
        }
    }
    LineSpec::CommentOrBlank
}

/// CPython's `get_normal_name`: only the first 12 characters are normalized.
fn normal_name(raw: &str) -> String {
    let head: String = raw
        .chars()
        .take(12)
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    if head == "utf-8" || head.starts_with("utf-8-") {
        "utf-8".to_owned()
    } else if ["latin-1", "iso-8859-1", "iso-latin-1"]
        .iter()
        .any(|n| head == *n || head.starts_with(&format!("{n}-")))
    {
        "iso-8859-1".to_owned()
    } else {
        raw.to_owned()
    }
}

/// Python's codec lookup: lower case, runs of punctuation collapsed to `_`.
fn python_codec_module(name: &str) -> Option<&'static str> {
    let mut normalized = String::with_capacity(name.len());
    let mut pending_underscore = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            if pending_underscore && !normalized.is_empty() {
                normalized.push('_');
            }
            pending_underscore = false;
            normalized.push(c.to_ascii_lowercase());
        } else {
            pending_underscore = true;
        }
    }
    let lookup = |key: &str| {
        PYTHON_CODECS
            .binary_search_by(|(alias, _)| (*alias).cmp(key))
            .ok()
            .map(|i| PYTHON_CODECS[i].1)
    };
    lookup(&normalized).or_else(|| lookup(&normalized.replace('.', "_")))
}

/// Bytes Python's Windows code pages cannot decode (generated from Python 3.11).
const PYTHON_UNDEFINED_BYTES: &[(&str, &[u8])] = &[
    ("cp1250", &[0x81, 0x83, 0x88, 0x90, 0x98]),
    ("cp1251", &[0x98]),
    ("cp1252", &[0x81, 0x8D, 0x8F, 0x90, 0x9D]),
    (
        "cp1253",
        &[
            0x81, 0x88, 0x8A, 0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x98, 0x9A, 0x9C, 0x9D, 0x9E, 0x9F,
            0xAA, 0xD2, 0xFF,
        ],
    ),
    ("cp1254", &[0x81, 0x8D, 0x8E, 0x8F, 0x90, 0x9D, 0x9E]),
    (
        "cp1255",
        &[
            0x81, 0x8A, 0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x9A, 0x9C, 0x9D, 0x9E, 0x9F, 0xCA, 0xD9,
            0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xFB, 0xFC, 0xFF,
        ],
    ),
    (
        "cp1257",
        &[
            0x81, 0x83, 0x88, 0x8A, 0x8C, 0x90, 0x98, 0x9A, 0x9C, 0x9F, 0xA1, 0xA5,
        ],
    ),
    (
        "cp1258",
        &[0x81, 0x8A, 0x8D, 0x8E, 0x8F, 0x90, 0x9A, 0x9D, 0x9E],
    ),
    (
        "cp874",
        &[
            0x81, 0x82, 0x83, 0x84, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F,
            0x90, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xDB, 0xDC, 0xDD, 0xDE, 0xFC,
            0xFD, 0xFE, 0xFF,
        ],
    ),
];

fn decode_with_codec(body: &[u8], cookie: &Cookie) -> Result<String, Diagnostic> {
    let Some(module) = python_codec_module(&cookie.name) else {
        return Err(Diagnostic::new(
            cookie.line,
            1,
            format!("unknown encoding: {}", cookie.name),
        ));
    };
    let undecodable = || {
        Diagnostic::new(
            cookie.line,
            1,
            format!("source is not valid {} (coding cookie)", cookie.name),
        )
    };
    match module {
        "utf_8" => decode_utf8(body).map(str::to_owned),
        "utf_8_sig" => {
            decode_utf8(body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)).map(str::to_owned)
        }
        "latin_1" => Ok(body.iter().map(|&b| char::from(b)).collect()),
        "ascii" => {
            if body.is_ascii() {
                Ok(body.iter().map(|&b| char::from(b)).collect())
            } else {
                Err(undecodable())
            }
        }
        other => {
            // WHATWG decodes these bytes to C1 controls; Python's code pages leave them undefined.
            if let Some((_, undefined)) = PYTHON_UNDEFINED_BYTES.iter().find(|(m, _)| *m == other) {
                if body.iter().any(|b| undefined.contains(b)) {
                    return Err(undecodable());
                }
            }
            let label = other.replace('_', "-");
            let Some(encoding) = encoding_rs::Encoding::for_label(label.as_bytes()) else {
                return Err(Diagnostic::new(
                    cookie.line,
                    1,
                    format!(
                        "encoding {} is a Python codec this verifier cannot decode",
                        cookie.name
                    ),
                ));
            };
            encoding
                .decode_without_bom_handling_and_without_replacement(body)
                .map(std::borrow::Cow::into_owned)
                .ok_or_else(undecodable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<String, String> {
        decode_source(bytes)
            .map(|d| d.text.into_owned())
            .map_err(|d| format!("{}:{} {}", d.line, d.column, d.message))
    }

    #[test]
    fn cookie_rules_match_cpython() {
        assert_eq!(
            decode(b"# coding: latin-1\nx='\xe9'\n").unwrap(),
            "# coding: latin-1\nx='é'\n"
        );
        assert_eq!(
            decode(b"# coding: foobar\n").unwrap_err(),
            "1:1 unknown encoding: foobar"
        );
        // CPython appends the final newline before it looks for the cookie.
        assert!(decode(b"# coding: foobar").is_err());
        assert!(decode(b"#!python\r# coding: foobar\r").is_err());
        // Line 2 counts only after a comment-only line 1.
        assert!(decode(b"x=1\n# coding: foobar\n").is_ok());
        assert!(decode(b"#!/usr/bin/env python\n# coding: foobar\n").is_err());
        assert!(decode(b"#\n#\n# coding: foobar\n").is_ok());
        assert_eq!(
            decode(b"\xef\xbb\xbf# coding: latin-1\n").unwrap_err(),
            "1:1 encoding problem: iso-8859-1 with BOM"
        );
        assert_eq!(
            decode(b"\xef\xbb\xbf# coding: utf8\n").unwrap_err(),
            "1:1 encoding problem: utf8 with BOM"
        );
        assert_eq!(decode(b"\xef\xbb\xbfx=1\n").unwrap(), "x=1\n");
        assert!(decode(b"x='\xff'\n")
            .unwrap_err()
            .starts_with("1:4 (unicode error)"));
        assert_eq!(
            decode(b"# -*- coding: koi8-r -*-\nx='\xc1'\n").unwrap(),
            "# -*- coding: koi8-r -*-\nx='а'\n"
        );
        assert!(decode(b"# coding: cp437\n")
            .unwrap_err()
            .contains("cannot decode"));
        assert!(decode(b"x=1\0\n").unwrap_err().contains("null bytes"));
        assert!(decode(b"# coding: cp1252\nx='\x80'\n").is_ok());
        assert!(decode(b"# coding: cp1252\nx='\x81'\n").is_err());
        assert_eq!(
            decode(b"\xef\xbb\xbf\xef\xbb\xbfx=1\n").unwrap_err(),
            "1:1 invalid non-printable character U+FEFF"
        );
    }
}
