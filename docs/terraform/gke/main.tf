# egressd on GKE: one gateway node pool per zone, labelled and tainted for egressd, and the
# controller's Google service account with the custom role of docs/iam/gcp-role.yaml, bound to
# the controller's Kubernetes service account through Workload Identity.

terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.0"
    }
  }
}

variable "project" {
  type = string
}

variable "location" {
  description = "Region of the (regional) cluster."
  type        = string
}

variable "cluster_name" {
  description = "GKE cluster name; also the chart's clusterName and the egressd.io/cluster label."
  type        = string
}

variable "gateway_zones" {
  description = "Zones to run one gateway node pool in, such as [\"europe-west1-b\", \"europe-west1-c\"]."
  type        = list(string)
}

variable "machine_type" {
  type    = string
  default = "e2-standard-2"
}

variable "gateway_group" {
  description = "Value of the egressd.io/gateway label: the group an EgressGateway selects."
  type        = string
  default     = "egress"
}

variable "namespace" {
  type    = string
  default = "egressd-system"
}

variable "service_account" {
  description = "The controller's service account: <release>-controller; the release is egressd."
  type        = string
  default     = "egressd-controller"
}

variable "private_nodes" {
  description = "Gateway nodes without external IPs. Needed for cloud.public: GCE allows one access config per network interface, and egressd binds the egress IP's static external address through it."
  type        = bool
  default     = true
}

resource "google_container_node_pool" "gateway" {
  for_each       = toset(var.gateway_zones)
  project        = var.project
  name           = "egressd-gateway-${each.key}"
  cluster        = var.cluster_name
  location       = var.location
  node_locations = [each.key]
  node_count     = 1

  node_config {
    machine_type = var.machine_type
    labels = {
      "egressd.io/gateway" = var.gateway_group
    }
    taint {
      key    = "egressd.io/gateway"
      value  = "true"
      effect = "NO_SCHEDULE"
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }

  network_config {
    enable_private_nodes = var.private_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    max_surge       = 1
    max_unavailable = 0
  }
}

# The same permissions as docs/iam/gcp-role.yaml (checked by docs/terraform/terraform_test.go).
resource "google_project_iam_custom_role" "controller" {
  project     = var.project
  role_id     = "egressd_controller"
  title       = "egressd controller"
  description = "Alias IPs and static external addresses for egressd gateway nodes."
  permissions = [
    "compute.instances.get",
    "compute.instances.list",
    "compute.instances.updateNetworkInterface",
    "compute.instances.addAccessConfig",
    "compute.instances.deleteAccessConfig",
    "compute.addresses.create",
    "compute.addresses.get",
    "compute.addresses.list",
    "compute.addresses.delete",
    "compute.addresses.use",
    "compute.addresses.setLabels",
    "compute.subnetworks.get",
    "compute.subnetworks.use",
    "compute.subnetworks.useExternalIp",
    "compute.zoneOperations.get",
    "compute.regionOperations.get",
  ]
}

resource "google_service_account" "controller" {
  project      = var.project
  account_id   = "egressd-controller"
  display_name = "egressd controller (${var.cluster_name})"
}

resource "google_project_iam_member" "controller" {
  project = var.project
  role    = google_project_iam_custom_role.controller.id
  member  = "serviceAccount:${google_service_account.controller.email}"
}

resource "google_service_account_iam_member" "workload_identity" {
  service_account_id = google_service_account.controller.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project}.svc.id.goog[${var.namespace}/${var.service_account}]"
}

output "helm_values" {
  description = "Values for helm install egressd charts/egressd -n egressd-system -f -"
  value = yamlencode({
    clusterName = var.cluster_name
    provider    = "gcp"
    gcp = {
      project        = var.project
      serviceAccount = google_service_account.controller.email
    }
  })
}
