// Command ascend-device-plugin advertises a simulated server's NPUs to its kubelet through the real
// device-plugin API (k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1), as MindCluster's Ascend Device Plugin
// does on an Atlas server: one device per /dev/davinciN, named Ascend910-N; an allocated device is mounted
// into the container with the shared management devices, and ASCEND_VISIBLE_DEVICES lists the NPU numbers.
//
// The devices are the server's /dev/davinci* stand-ins, rescanned every second: a device that vanishes is
// reported Unhealthy, so tests can take an NPU away. When the kubelet restarts (its socket is recreated)
// the plugin registers again.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

var davinci = regexp.MustCompile(`^davinci(\d+)$`)

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	resource string
	devDir   string
	shared   []string
	updates  chan []*pluginapi.Device
}

// scan lists the NPUs present now, healthy, in number order; the IDs of vanished ones are kept as Unhealthy.
func (p *plugin) scan(known map[string]bool) []*pluginapi.Device {
	entries, _ := os.ReadDir(p.devDir)
	present := map[string]bool{}
	for _, entry := range entries {
		if m := davinci.FindStringSubmatch(entry.Name()); m != nil {
			present["Ascend910-"+m[1]] = true
			known["Ascend910-"+m[1]] = true
		}
	}
	ids := make([]string, 0, len(known))
	for id := range known {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return npu(ids[i]) < npu(ids[j]) })
	devices := make([]*pluginapi.Device, 0, len(ids))
	for _, id := range ids {
		health := pluginapi.Unhealthy
		if present[id] {
			health = pluginapi.Healthy
		}
		devices = append(devices, &pluginapi.Device{ID: id, Health: health})
	}
	return devices
}

func npu(id string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(id, "Ascend910-"))
	return n
}

func (p *plugin) watchDevices() {
	known := map[string]bool{}
	last := ""
	for {
		devices := p.scan(known)
		key := fmt.Sprint(devices)
		if key != last {
			last = key
			p.updates <- devices
		}
		time.Sleep(time.Second)
	}
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	for devices := range p.updates {
		if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devices}); err != nil {
			return err
		}
	}
	return nil
}

func (p *plugin) GetPreferredAllocation(context.Context, *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	return &pluginapi.PreferredAllocationResponse{}, nil
}

func (p *plugin) Allocate(_ context.Context, request *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	response := &pluginapi.AllocateResponse{}
	for _, container := range request.ContainerRequests {
		ids := append([]string(nil), container.DevicesIds...)
		sort.Slice(ids, func(i, j int) bool { return npu(ids[i]) < npu(ids[j]) })
		answer := &pluginapi.ContainerAllocateResponse{}
		numbers := make([]string, 0, len(ids))
		for _, id := range ids {
			path := filepath.Join(p.devDir, fmt.Sprintf("davinci%d", npu(id)))
			answer.Devices = append(answer.Devices, &pluginapi.DeviceSpec{ContainerPath: path, HostPath: path, Permissions: "rw"})
			numbers = append(numbers, strconv.Itoa(npu(id)))
		}
		for _, path := range p.shared {
			answer.Devices = append(answer.Devices, &pluginapi.DeviceSpec{ContainerPath: path, HostPath: path, Permissions: "rw"})
		}
		answer.Envs = map[string]string{"ASCEND_VISIBLE_DEVICES": strings.Join(numbers, ",")}
		response.ContainerResponses = append(response.ContainerResponses, answer)
	}
	return response, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// serve listens on the plugin's socket and registers it with the kubelet; it returns when the socket is
// removed (the kubelet wipes its plugin folder when it restarts), so main can serve and register again.
func (p *plugin) serve(socketDir, name string) error {
	socket := filepath.Join(socketDir, name)
	_ = os.Remove(socket)
	listener, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	server := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(server, p)
	go func() { _ = server.Serve(listener) }()
	defer server.Stop()

	conn, err := grpc.NewClient("unix://"+filepath.Join(socketDir, "kubelet.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version: pluginapi.Version, Endpoint: name, ResourceName: p.resource,
		Options: &pluginapi.DevicePluginOptions{},
	})
	if err != nil {
		return fmt.Errorf("register with the kubelet: %w", err)
	}
	log.Printf("registered %s with the kubelet", p.resource)
	for {
		time.Sleep(time.Second)
		if _, err := os.Stat(socket); err != nil {
			return nil
		}
	}
}

func main() {
	resource := flag.String("resource", "huawei.com/Ascend910", "the extended resource name (the hardware profile's)")
	devDir := flag.String("dev-dir", "/dev", "where the server's davinci devices are")
	shared := flag.String("shared-devices", "/dev/davinci_manager,/dev/devmm_svm,/dev/hisi_hdc",
		"management devices mounted with every allocation (comma-separated)")
	socketDir := flag.String("socket-dir", pluginapi.DevicePluginPath, "the kubelet's device-plugin folder")
	flag.Parse()

	p := &plugin{resource: *resource, devDir: *devDir, updates: make(chan []*pluginapi.Device, 1)}
	for _, path := range strings.Split(*shared, ",") {
		if path != "" {
			p.shared = append(p.shared, path)
		}
	}
	go p.watchDevices()
	for {
		if err := p.serve(*socketDir, "ascend.sock"); err != nil {
			log.Printf("%v; retrying", err)
		}
		time.Sleep(time.Second)
	}
}
