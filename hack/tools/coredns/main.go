// CoreDNS with only the plugins hack/node's cluster DNS uses: the
// kubernetes plugin serving cluster.local from the apiserver, bind, ready,
// errors and log. No forward plugin: it answers for the cluster's names
// only and never asks another server. The directive order is CoreDNS's own
// (core/dnsserver/zdirectives.go), narrowed to these plugins.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"bind", "ready", "errors", "log", "kubernetes"}
}

func main() {
	coremain.Run()
}
