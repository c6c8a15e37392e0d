package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/r8im/r8im/config"
)

// probeCmd is a container health check for images without curl (distroless):
// it GETs a health endpoint and exits 0 only on 200.
func probeCmd(cfg *config.Worker) *cobra.Command {
	var url string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "probe",
		Short: "Check a health endpoint (for container health checks): exit 0 on HTTP 200",
		Long: `probe GETs --url (default: /readyz on --http-addr, R8IM_HTTP_ADDR) and exits 0
when it answers 200, else 1 with the answer. Container images without curl use it
as their health check, for the worker and for enqueue serve alike.`,
		Example: `  worker probe                                     # this worker's /readyz
  worker probe --url http://127.0.0.1:8080/healthz  # an event receiver`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if url == "" {
				url = "http://" + dialable(cfg.HTTPAddr) + "/readyz"
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return fmt.Errorf("probing %s: %w", url, err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("probing %s: %w (is the process running and listening there?)", url, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("probing %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
			}
			fmt.Fprint(cmd.OutOrStdout(), string(body))
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "URL to GET (default: http://<--http-addr>/readyz)")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "how long to wait for the answer")
	return cmd
}

// dialable turns a listen address into one to connect to: an unspecified
// host (0.0.0.0, ::, empty) becomes loopback.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
