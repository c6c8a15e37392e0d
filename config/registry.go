package config

import (
	"os"

	"github.com/google/go-containerregistry/pkg/name"
)

// DefaultRegistry is the registry used for references without a host.
const DefaultRegistry = "r8.im"

// Registry holds how to reach and authenticate to container registries.
// Credentials come from the docker config (DOCKER_CONFIG, credential
// helpers) unless Token is set.
type Registry struct {
	Host         string // used when a reference names no registry
	Token        Secret // a Replicate cog token, exchanged for basic auth
	DockerConfig string // directory holding config.json; "" means ~/.docker
	Insecure     bool   // plain HTTP / unverified TLS for non-loopback registries
}

func (r *Registry) bind(b *binder) {
	b.bind(stringVar(&r.Host, DefaultRegistry), "registry", "r", []string{"R8IM_REGISTRY"}, plain,
		"registry host used when a reference names none")
	b.bind(stringVar(&r.Token, ""), "token", "t", []string{"COG_TOKEN"}, secret,
		"Replicate cog token; exchanged at https://<registry>/cog/v1/verify-token for registry credentials")
	b.bind(stringVar(&r.DockerConfig, ""), "docker-config", "", []string{"DOCKER_CONFIG"}, plain,
		"directory of the docker config.json used for registry credentials (default ~/.docker)")
	b.bind(boolVar(&r.Insecure, false), "insecure", "", []string{"R8IM_INSECURE"}, plain,
		"allow plain HTTP and unverified TLS to registries (loopback registries always allow HTTP)")
}

func (r *Registry) validate(b *binder) []Problem {
	var ps []Problem
	if _, err := name.NewRegistry(r.Host, name.StrictValidation); err != nil || r.Host == "" {
		ps = append(ps, b.problem("registry", "%q is not a registry host; use a host[:port] such as r8.im or localhost:5000", r.Host))
	}
	if r.DockerConfig != "" {
		if st, err := os.Stat(r.DockerConfig); err != nil || !st.IsDir() {
			ps = append(ps, b.problem("docker-config", "%q is not a directory; point it at the directory holding config.json", r.DockerConfig))
		}
	}
	return ps
}
