package api

// TEMPORARY stand-ins for helper "suspend"'s states, deleted when branch
// suspend is merged (it defines them in api.go).
const (
	StatePaused    = "paused"
	StateSuspended = "suspended"
)
