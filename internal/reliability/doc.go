// Package reliability holds r8im's fault, soak, secrets and hostile-input
// tests: real Redis, registry and MinIO servers, worker processes killed and
// stopped mid-task, faults injected between the services, and a committed
// corpus of bad input run through the real entry points. docs/reliability.md
// lists each fault, how it is injected and what the system guarantees.
package reliability
