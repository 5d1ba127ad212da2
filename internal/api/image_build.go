package api

// Image build distributions accepted by image.build.
const (
	DistroDebian = "debian"
)

// ImageBuildParams are image.build's params. Name defaults to the distro's
// name and Size to "4G".
type ImageBuildParams struct {
	Distro string `json:"distro"`
	Name   string `json:"name,omitempty"`
	Size   string `json:"size,omitempty"`
}

// ImageBuildStage is one finished stage of a build and how long it took.
type ImageBuildStage struct {
	Stage    string  `json:"stage"`
	ElapsedS float64 `json:"elapsed_s"`
}

// ImageBuildResult is image.build's result.
type ImageBuildResult struct {
	Image    Image             `json:"image"`
	Stages   []ImageBuildStage `json:"stages"`
	ElapsedS float64           `json:"elapsed_s"`
}
