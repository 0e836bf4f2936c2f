package main

import (
	"slices"
	"strconv"
	"strings"
)

// keySep joins the parts of a dotted TOML table name in the maps that
// parseLooseTOML returns; it can't occur in a real key.
const keySep = "\x1f"

// parseLooseTOML reads just enough TOML to find containerd's runtime
// handlers: tables (including quoted dotted names), key = value pairs with
// dotted keys, strings of every kind, multi-line arrays and one level of
// inline tables. It never fails: what it does not understand it skips, and
// doctor falls back to a text search. It returns table name (parts joined
// by keySep; "" is the root) to key to value, strings unquoted and other
// values as written.
func parseLooseTOML(data string) map[string]map[string]string {
	tables := map[string]map[string]string{"": {}}
	set := func(path []string, value string) {
		if len(path) == 0 {
			return
		}
		table := strings.Join(path[:len(path)-1], keySep)
		if tables[table] == nil {
			tables[table] = map[string]string{}
		}
		tables[table][path[len(path)-1]] = value
	}
	var current []string
	lines := strings.Split(data, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' { // [table] or [[array.of.tables]]
			header := strings.TrimSpace(stripComment(line))
			header = strings.TrimSuffix(strings.TrimPrefix(header, "["), "]")
			header = strings.TrimSuffix(strings.TrimPrefix(header, "["), "]")
			current = splitKey(header)
			if tables[strings.Join(current, keySep)] == nil {
				tables[strings.Join(current, keySep)] = map[string]string{}
			}
			continue
		}
		at := indexOutsideQuotes(line, '=')
		if at < 0 {
			continue
		}
		path := append(slices.Clone(current), splitKey(line[:at])...)
		value := strings.TrimSpace(line[at+1:])
		switch {
		case strings.HasPrefix(value, `"""`), strings.HasPrefix(value, `'''`):
			delim := value[:3]
			body := value[3:]
			for !strings.Contains(body, delim) && i+1 < len(lines) {
				i++
				body += "\n" + lines[i]
			}
			body, _, _ = strings.Cut(body, delim)
			set(path, strings.TrimPrefix(body, "\n"))
		case strings.HasPrefix(value, "["):
			value = stripComment(value)
			for bracketDepth(value) > 0 && i+1 < len(lines) {
				i++
				value += " " + stripComment(lines[i])
			}
			set(path, strings.TrimSpace(value))
		case strings.HasPrefix(value, "{"):
			inner := strings.TrimSpace(stripComment(value))
			inner = strings.TrimSuffix(strings.TrimPrefix(inner, "{"), "}")
			for _, pair := range splitOutsideQuotes(inner, ',') {
				if eq := indexOutsideQuotes(pair, '='); eq >= 0 {
					set(append(slices.Clone(path), splitKey(pair[:eq])...), scalar(pair[eq+1:]))
				}
			}
		default:
			set(path, scalar(stripComment(value)))
		}
	}
	return tables
}

// scalar unquotes a basic or literal string and trims anything else.
func scalar(v string) string {
	v = strings.TrimSpace(v)
	switch {
	case strings.HasPrefix(v, `"`):
		if end := closingQuote(v); end > 0 {
			if s, err := strconv.Unquote(v[:end+1]); err == nil {
				return s
			}
			return v[1:end]
		}
	case strings.HasPrefix(v, "'"):
		if end := strings.IndexByte(v[1:], '\''); end >= 0 {
			return v[1 : end+1]
		}
	}
	return v
}

// closingQuote is the index of the quote that ends the basic string at the
// start of v, or -1.
func closingQuote(v string) int {
	for i := 1; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// stringList reads a TOML array of strings such as imports = ["a", 'b'].
func stringList(v string) []string {
	v = strings.TrimSpace(v)
	if !strings.HasPrefix(v, "[") {
		return nil
	}
	v = strings.TrimSuffix(strings.TrimPrefix(v, "["), "]")
	var out []string
	for _, item := range splitOutsideQuotes(v, ',') {
		if s := scalar(item); s != "" && s != strings.TrimSpace(item) {
			out = append(out, s)
		}
	}
	return out
}

// splitKey splits a dotted key, honouring quoted parts:
// plugins."io.containerd.cri.v1.runtime".containerd -> 3 parts.
func splitKey(key string) []string {
	var parts []string
	for _, p := range splitOutsideQuotes(key, '.') {
		p = strings.TrimSpace(p)
		if strings.HasPrefix(p, `"`) || strings.HasPrefix(p, "'") {
			p = scalar(p)
		}
		parts = append(parts, p)
	}
	return parts
}

// quoteScanner walks s, calling visit for each byte outside quotes.
func quoteScanner(s string, visit func(i int) bool) {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == '"' && c == '\\':
			i++
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		default:
			if !visit(i) {
				return
			}
		}
	}
}

func indexOutsideQuotes(s string, sep byte) int {
	at := -1
	quoteScanner(s, func(i int) bool {
		if s[i] == sep {
			at = i
			return false
		}
		return true
	})
	return at
}

func splitOutsideQuotes(s string, sep byte) []string {
	var parts []string
	start := 0
	quoteScanner(s, func(i int) bool {
		if s[i] == sep {
			parts = append(parts, s[start:i])
			start = i + 1
		}
		return true
	})
	return append(parts, s[start:])
}

func stripComment(s string) string {
	if i := indexOutsideQuotes(s, '#'); i >= 0 {
		return s[:i]
	}
	return s
}

// bracketDepth is how many [ are still open in s.
func bracketDepth(s string) int {
	depth := 0
	quoteScanner(s, func(i int) bool {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
		}
		return true
	})
	return depth
}
