#!/usr/bin/env python3
"""Writes tests/oracle/cases.txt to stdout: the sample bodies of the oracle.

Each case is two lines, `# <row> <what it shows>` and the base64 of the body (an empty line for
the empty body). <row> is P0-P21 (the rows of the connector-error table, docs/connector-error.md, "Body rows"
section 3.3), OK for bodies Elasticsearch accepts, EOF for an end of input met before the object,
UTF32 for a truncated UTF-32 body, CUT for a body cut short at some point.

    python3 tests/oracle/make-cases.py > tests/oracle/cases.txt   # or: scripts/oracle --regenerate

Keep the order stable: tests/oracle/expected/*.txt answer cases.txt line for line.
"""

import base64
import sys

CASES = []


def case(row, what, body):
    """One case; `body` is str (encoded as UTF-8) or bytes."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    assert "\n" not in what
    CASES.append((row, what, body))


def err(value):
    """A body whose only member is "error" with the given raw JSON value text."""
    return '{"error":' + value + "}"


def utf16le(text):
    return text.encode("utf-16-le")


def utf16be(text):
    return text.encode("utf-16-be")


# ---- P0-P10: Elasticsearch's own checks --------------------------------------------------------

case("P0", "empty body (Content-Length 0)", b"")
case("P1", "empty object", "{}")
case("P1", "empty object with spaces", "{ }")
case("P1", "object holding only a comment", "{/* nothing */}")
case("P2", "integer value", err("1"))
case("P2", "float value", err("1.5"))
case("P2", "negative integer", err("-3"))
case("P2", "minus zero", err("-0"))
case("P2", "exponent beyond double range (numbers are never decoded)", err("1e400"))
case("P2", "1000 digits: just within Jackson's number-length limit", err("9" * 1000))
case("P3", "true", err("true"))
case("P3", "false", err("false"))
case("P4", "object value", err('{"a":1}'))
case("P4", "object nested 300 deep inside the value (only its first token is read)",
     err('{"a":' * 300 + "1" + "}" * 300))
case("P5", "array value", err('["a"]'))
case("P5", "arrays nested 2000 deep inside the value", err("[" * 2000 + "]" * 2000))
case("P5", "1000 unclosed arrays inside the value (the rest is never read)", '{"error":' + "[" * 1000)
case("P6", "unknown field", '{"foo":"bar"}')
case("P6", "empty field name", '{"":1}')
case("P6", "one-letter field name", '{"e":1}')
case("P6", "emoji field name (the reason escapes it as a surrogate pair)", '{"\U0001F600":1}')
case("P6", "ERROR is too far from error for a suggestion", '{"ERROR":"x"}')
case("P6", "escaped field name that is not error", '{"err\\u0030r":"x"}')
case("P6", "field name of 50001 characters: Elasticsearch lifts Jackson's 50000-character limit",
     '{"' + "n" * 50001 + '":1}')
case("P7", "near miss: erro", '{"erro":"x"}')
case("P7", "near miss: Error (names are case-sensitive)", '{"Error":"x"}')
case("P7", "near miss: errors", '{"errors":"x"}')
case("P7", "near miss: eror", '{"eror":"x"}')
case("P7", "near miss: rror", '{"rror":"x"}')
case("P8", "unknown field after a valid error", '{"error":"x","foo":1}')
case("P8", "column counts bytes: e-acute is 2 bytes", '{"error":"\u00e9","foo":1}')
case("P8", "multi-line body: the location is on line 3", '{\n"error":"x",\n"foo":1}')
case("P8", "CR LF lines", '{\r\n"error":"x",\r\n"foo":1\r\n}')
case("P8", "unknown field after null", '{"error":null,"foo":1}')
case("P9", "array at the root", "[]")
case("P9", "string at the root", '"x"')
case("P9", "null at the root", "null")
case("P9", "number at the root", "123")
case("P9", "negative float at the root", "-1.5")
case("P9", "boolean at the root", "true")
case("P9", "array at the root after a comment", "/* c */[1]")
case("P10", "one space", " ")
case("P10", "one newline", "\n")
case("P10", "CR LF TAB and spaces only", "\r\n\t  ")
case("P10", "only a block comment", "/* c */")
case("P10", "only a line comment, no newline", "// c")
case("P12", "UTF-8 byte order mark only (2.21+ reads it as U+FEFF, older jars fail on its second byte)",
     b"\xef\xbb\xbf")

# ---- P11-P21: Jackson's errors, wrapped by Elasticsearch ----------------------------------------

case("P11", "duplicate key", '{"error":"a","error":"b"}')
case("P11", "duplicate null", '{"error":null,"error":null}')
case("P11", "duplicate key given as an escape", '{"error":"a","\\u0065rror":"b"}')
case("P12", "missing value", '{"error": }')
case("P12", "YAML-style hash comment (only /* */ and // are comments)", '# note\n{"error":"x"}')
case("P12", "comma instead of a value", '{"error":,}')
case("P12", "lone closing brace", "}")
case("P12", "lone closing bracket", "]")
case("P12", "closing bracket after the value", '{"error":"x"]')
case("P12", "colon twice", '{"error"::"x"}')
case("P12", "closing bracket as the value", '{"error":]}')
case("P13", "not JSON at all", "not json")
case("P13", "invalid UTF-8 byte before the object", b'\xff{"error":"x"}')
case("P13", "truncated literal at the root", "tru")
case("P13", "unquoted word as the value", err("undefined"))
case("P14", "unquoted field name", '{error:"x"}')
case("P14", "single-quoted field name", "{'error':'x'}")
case("P14", "number as field name", '{1:"x"}')
case("P15", "trailing comma", '{"error":"x",}')
case("P15", "trailing comma and spaces", '{"error":"x" , }')
case("P16", "missing comma", '{"error":"x" "foo":1}')
case("P16", "missing comma after a 600-byte value: [truncated N bytes] in the snippet",
     '{"error":"' + "a" * 600 + '" "foo":1}')
case("P16", "semicolon instead of comma", '{"error":"x";"foo":1}')
case("P17", "object not closed after the value", '{"error":"x"')
case("P17", "object not closed after null", '{"error":null')
case("P17", "object not closed after the value and a space", '{"error":"x" ')
case("P17", "comment not closed after the value", '{"error":"x"/* open')
case("P17", "line comment at the end after the value", '{"error":"x"// c')
case("P18", "input ends after the colon", '{"error":')
case("P18", "input ends after the field name", '{"error"')
case("P18", "input ends after the colon and spaces", '{"error" :  ')
case("P19", "lone open brace", "{")
case("P19", "open brace and a newline", "{\n")
case("P19", "byte order mark and an open brace", b"\xef\xbb\xbf{")
case("P20", "unterminated string", '{"error":"x')
case("P20", "unterminated string after 600 bytes", '{"error":"' + "a" * 600)
case("P20", "raw LF inside the string", '{"error":"line1\nline2"}')
case("P20", "raw TAB inside the string (shown as \\u0009 in the snippet)", '{"error":"tab\there"}')
case("P20", "raw NUL byte inside the string", b'{"error":"a\x00b"}')
case("P20", "raw DEL is allowed, raw 0x1f is not", b'{"error":"\x7f\x1f"}')
case("P20", "bad escape \\q", '{"error":"a\\qb"}')
case("P20", "truncated \\u escape", '{"error":"\\u12"}')
case("P20", "\\u escape cut by the end of input", '{"error":"\\u12')
case("P20", "backslash at the end of input", '{"error":"\\')
case("P20", "invalid UTF-8 inside the string", b'{"error":"\xc3\x28"}')
case("P20", "UTF-8 continuation byte alone inside the string", b'{"error":"a\x80b"}')
case("OK", "overlong UTF-8 encoding C0 80 inside the string: Jackson reads it as NUL", b'{"error":"\xc0\x80"}')
case("P20", "UTF-8 sequence cut by the end of input", b'{"error":"\xe2\x82')
case("P20", "bad escape after 800 bytes of 2-byte characters: the snippet ends inside a character",
     '{"error":"' + "\u00e9" * 400 + '\\q"}')
case("P20", "raw UTF-8-encoded surrogate (bytes ED A0 80): an error from Jackson 2.21 on",
     b'{"error":"a\xed\xa0\x80b"}')
case("P20", "raw UTF-8-encoded low surrogate (bytes ED B0 80)", b'{"error":"\xed\xb0\x80"}')
case("P21", "truncated literal nul", '{"error": nul}')
case("P21", "truncated literal tru", err("tru"))
case("P21", "literal with extra letters", err("nulll"))
case("P21", "minus sign without digits", '{"error": -}')
case("P21", "leading zero", err("01"))
case("P21", "leading plus", err("+1"))
case("P21", "leading dot", err(".5"))
case("P21", "NaN", err("NaN"))
case("P21", "Infinity", err("-Infinity"))
case("P21", "exponent without digits", err("1e"))
case("P21", "number of 1001 digits: Jackson's number-length limit, which Elasticsearch keeps",
     err("7" * 1001))
case("P2", "number of 1001 characters with a 999-digit fraction: within the limit", err("0." + "5" * 999))

# ---- before the object: an end of input, a truncated UTF-32 body --------------------------------

case("EOF", "comment not closed before the object", "/* open")
case("EOF", "comment opener only", "/*")
case("EOF", "comment not closed after a byte order mark", b"\xef\xbb\xbf/* open")
case("UTF32", "truncated UTF-32 body: CharConversionException (wrapping C: a 400 without [L:C])",
     b"\x00\x00\x00{\x00\x00\x00")
case("UTF32", "UTF-32BE body cut inside its second character", b'\x00\x00\x00{\x00\x00\x00"\x00')

# ---- accepted bodies ----------------------------------------------------------------------------

case("OK", "plain string", '{"error":"Houston, we have a problem!"}')
case("OK", "null resets the error", '{"error":null}')
case("OK", "empty string", '{"error":""}')
case("OK", "block and line comments around every token",
     '/* a */{/* b */"error"// c\n:/* d */"x"/* e */}// f')
case("OK", "comment that looks like a member", '{/* "foo":1, */"error":"x"}')
case("OK", "UTF-8 byte order mark", b'\xef\xbb\xbf{"error":"x"}')
case("OK", "trailing garbage after the root object is never read", '{"error":"x"} trailing garbage')
case("OK", "extra closing brace", '{"error":"x"}}')
case("OK", "trailing comma after the root object", '{"error":"x"},')
case("OK", "second object after the root object", '{"error":"x"}{"foo":1}')
case("OK", "invalid UTF-8 bytes after the root object", b'{"error":"x"}\xff\xfe')
case("OK", "comment left open after the root object", '{"error":"x"}/* open')
case("OK", "whitespace, CR LF and tabs around tokens", '\r\n {\t"error" :\r\n "x" \n}\n')
case("OK", "non-ASCII value (the emoji comes back as a surrogate-pair escape)",
     '{"error":"h\u00e9llo \u2713 \u4e2d \U0001F600"}')
case("OK", "every JSON escape", '{"error":"\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\u20AC \\uD83D\\uDE00"}')
case("OK", "escaped NUL and other control characters", '{"error":"a\\u0000b\\u001f\\u007f"}')
case("OK", "lone surrogate escape (accepted by Jackson; a Rust String cannot hold it)",
     '{"error":"\\uD800"}')
case("OK", "surrogates escaped in the wrong order", '{"error":"\\uDC00\\uD800"}')
case("OK", "raw DEL and a U+FFFF noncharacter", b'{"error":"\x7f\xef\xbf\xbf"}')
case("OK", "600-byte value", '{"error":"' + "a" * 600 + '"}')
case("OK", "long value of 3-byte characters", '{"error":"' + "\u20ac" * 3000 + '"}')
case("OK", "20000-byte value", '{"error":"' + "abcdefghij" * 2000 + '"}')
case("OK", "escaped field name error", '{"\\u0065rror":"x"}')
case("OK", "text that looks like a comment inside the value", '{"error":"/* no */ // no"}')
case("OK", "UTF-16LE body with BOM (Jackson detects the encoding)", b"\xff\xfe" + utf16le('{"error":"x"}'))
case("OK", "UTF-16BE body without BOM", utf16be('{"error":"x"}'))

# ---- CUT: one body cut short at every byte, and other bodies at interesting points ------------

base = '{"error" : "x\u00e9\\n"}'.encode("utf-8")
for n in range(1, len(base)):
    case("CUT", "%s cut after %d of %d bytes" % (ascii(base.decode("utf-8")), n, len(base)), base[:n])
for n in (10, 11, 12, 13):
    case("CUT", "{\"error\":null} cut after %d bytes" % n, b'{"error":null}'[:n])
for n in (10, 11, 12, 13):
    case("CUT", "{\"error\":true} cut after %d bytes" % n, b'{"error":true}'[:n])
for n in (11, 12, 13, 14, 15):
    case("CUT", "escape \\u00e9 cut after %d bytes" % n, b'{"error":"\\u00e9"}'[:n])
for n in (2, 3, 5, 7):
    case("CUT", "comment before the name cut after %d bytes" % n, b'{/* c */"error":"x"}'[:n])
for n in (11, 12, 13):
    case("CUT", "4-byte character cut after %d bytes" % n, '{"error":"\U0001F600"}'.encode("utf-8")[:n])
for n in (2, 5, 8):
    case("CUT", "unknown field cut after %d bytes" % n, b'{"foo":1}'[:n])
case("CUT", "cut inside a second field name", b'{"error":"x","fo')
case("CUT", "cut after the comma", b'{"error":"x",')
case("CUT", "cut inside a line comment after the comma", b'{"error":"x",// c')


def main():
    out = sys.stdout.buffer
    for row, what, body in CASES:
        out.write(("# %s %s\n" % (row, what)).encode("utf-8"))
        out.write(base64.b64encode(body) + b"\n")


if __name__ == "__main__":
    main()
