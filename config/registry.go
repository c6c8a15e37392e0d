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
	ChunkSize    int64  // upload chunk size in bytes; 0 sends every blob in one request
	RequireMount bool   // fail instead of copying base layers the registry would not mount
}

// DefaultChunkSize is the upload chunk size (imageops.DefaultChunkSize):
// under Cloudflare's 100 MB request-body cap.
const DefaultChunkSize = 96 << 20

// minChunkSize is the smallest chunk size accepted: below it the requests'
// overhead dominates, and ECR refuses chunks under 5 MB anyway.
const minChunkSize = 1 << 20

func (r *Registry) bind(b *binder) {
	b.bind(stringVar(&r.Host, DefaultRegistry), "registry", "r", []string{"R8IM_REGISTRY"}, plain,
		"registry host used when a reference names none")
	b.bind(stringVar(&r.Token, ""), "token", "t", []string{"COG_TOKEN"}, secret,
		"Replicate cog token; exchanged at https://<registry>/cog/v1/verify-token for registry credentials")
	b.bind(stringVar(&r.DockerConfig, ""), "docker-config", "", []string{"DOCKER_CONFIG"}, plain,
		"directory of the docker config.json used for registry credentials (default ~/.docker)")
	b.bind(boolVar(&r.Insecure, false), "insecure", "", []string{"R8IM_INSECURE"}, plain,
		"allow plain HTTP and unverified TLS to registries (loopback registries always allow HTTP)")
	b.bind(sizeVar(&r.ChunkSize, DefaultChunkSize), "chunk-size", "", []string{"R8IM_UPLOAD_CHUNK_SIZE"}, plain,
		"upload blobs over 128MiB in chunks of this size, so that a front capping request bodies (Cloudflare: 100-500MB) takes them; 0 sends each blob in one request")
	b.bind(boolVar(&r.RequireMount, false), "require-mount", "", []string{"R8IM_REQUIRE_MOUNT"}, plain,
		"fail instead of downloading and uploading again base layers the registry will not mount (a base on another registry, or in a repository the credentials may not pull)")
}

func (r *Registry) validate(b *binder) []Problem {
	var ps []Problem
	if _, err := name.NewRegistry(r.Host, name.StrictValidation); err != nil || r.Host == "" {
		ps = append(ps, b.problem("registry", "%q is not a registry host; use a host[:port] such as r8.im or localhost:5000", r.Host))
	}
	if r.ChunkSize != 0 && r.ChunkSize < minChunkSize {
		ps = append(ps, b.problem("chunk-size", "%d bytes is too small for an upload chunk; use at least 1MiB (e.g. 96MiB), or 0 for one request per blob", r.ChunkSize))
	}
	if r.DockerConfig != "" {
		if st, err := os.Stat(r.DockerConfig); err != nil || !st.IsDir() {
			ps = append(ps, b.problem("docker-config", "%q is not a directory; point it at the directory holding config.json", r.DockerConfig))
		}
	}
	return ps
}
