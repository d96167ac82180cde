package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// fieldSet describes the YAML keys a struct accepts, recursively, so an unknown key is
// reported with its line and the keys that would have been accepted.
type fieldSet struct {
	keys map[string]*fieldSet // nil value: a scalar or free-form map
	list bool                 // the node is a sequence of the struct
}

func reflectFields(v any) *fieldSet { return fieldsOf(reflect.TypeOf(v)) }

func fieldsOf(t reflect.Type) *fieldSet {
	switch t.Kind() {
	case reflect.Pointer:
		return fieldsOf(t.Elem())
	case reflect.Slice:
		if fs := fieldsOf(t.Elem()); fs != nil {
			return &fieldSet{keys: fs.keys, list: true}
		}
		return nil
	case reflect.Struct:
		fs := &fieldSet{keys: map[string]*fieldSet{}}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fs.keys[tag] = fieldsOf(f.Type)
		}
		return fs
	}
	return nil
}

func checkKnownFields(path string, n *yaml.Node, fs *fieldSet) error {
	return checkNode(path, "", n, fs)
}

func checkNode(path, prefix string, n *yaml.Node, fs *fieldSet) error {
	if fs == nil || n == nil {
		return nil
	}
	if fs.list {
		if n.Kind != yaml.SequenceNode {
			return &FieldError{File: path, Line: n.Line, Field: prefix, Msg: "expected a list"}
		}
		for i, item := range n.Content {
			if err := checkNode(path, fmt.Sprintf("%s[%d]", prefix, i), item, &fieldSet{keys: fs.keys}); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind != yaml.MappingNode {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return nil
		}
		return &FieldError{File: path, Line: n.Line, Field: prefix, Msg: "expected a mapping of keys to values"}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		sub, ok := fs.keys[k.Value]
		name := k.Value
		if prefix != "" {
			name = prefix + "." + k.Value
		}
		if !ok {
			known := make([]string, 0, len(fs.keys))
			for key := range fs.keys {
				known = append(known, key)
			}
			sort.Strings(known)
			return &FieldError{File: path, Line: k.Line, Field: name, Msg: "unknown field; expected one of " + strings.Join(known, ", ")}
		}
		if err := checkNode(path, name, v, sub); err != nil {
			return err
		}
	}
	return nil
}
