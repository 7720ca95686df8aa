// Package kube proves the kubernetes compute driver against a real
// kube-apiserver: see harness_test.go.
package kube
