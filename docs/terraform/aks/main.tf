# egressd on AKS: one gateway node pool per zone, labelled and tainted for egressd, and the
# controller's user-assigned identity with the role of docs/iam/azure-role.json on the node
# resource group, federated with the controller's Kubernetes service account (Workload ID).

terraform {
  required_version = ">= 1.5"
  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 3.100"
    }
  }
}

variable "cluster_name" {
  description = "AKS cluster name; also the chart's clusterName and the egressd.io/cluster tag."
  type        = string
}

variable "resource_group" {
  description = "Resource group of the AKS cluster resource."
  type        = string
}

variable "gateway_zones" {
  description = "Availability zones to run one gateway node pool in, such as [\"1\", \"2\", \"3\"]."
  type        = list(string)
}

variable "vm_size" {
  type    = string
  default = "Standard_D2s_v5"
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

data "azurerm_kubernetes_cluster" "this" {
  name                = var.cluster_name
  resource_group_name = var.resource_group
}

data "azurerm_resource_group" "nodes" {
  name = data.azurerm_kubernetes_cluster.this.node_resource_group
}

data "azurerm_subscription" "current" {}

# azurerm creates these pools as Uniform virtual machine scale sets: it has no VirtualMachines
# pool type (hashicorp/terraform-provider-azurerm#30196). Uniform instances cannot hold egress
# IPs (docs/azure.md, "Uniform scale sets"), so until a pool of standalone VMs can be declared
# here, create the gateway pools with `az aks nodepool add --vm-set-type VirtualMachines` and
# apply with -var 'gateway_zones=[]' (docs/install-aks.md).
resource "azurerm_kubernetes_cluster_node_pool" "gateway" {
  for_each              = toset(var.gateway_zones)
  name                  = "egw${each.key}"
  kubernetes_cluster_id = data.azurerm_kubernetes_cluster.this.id
  vm_size               = var.vm_size
  node_count            = 1
  zones                 = [each.key]
  node_labels = {
    "egressd.io/gateway" = var.gateway_group
  }
  node_taints = ["egressd.io/gateway=true:NoSchedule"]
}

resource "azurerm_user_assigned_identity" "controller" {
  name                = "${var.cluster_name}-egressd-controller"
  resource_group_name = var.resource_group
  location            = data.azurerm_kubernetes_cluster.this.location
}

resource "azurerm_federated_identity_credential" "controller" {
  name                = "egressd-controller"
  resource_group_name = var.resource_group
  parent_id           = azurerm_user_assigned_identity.controller.id
  issuer              = data.azurerm_kubernetes_cluster.this.oidc_issuer_url
  subject             = "system:serviceaccount:${var.namespace}:${var.service_account}"
  audience            = ["api://AzureADTokenExchange"]
}

# The same actions as docs/iam/azure-role.json (checked by docs/terraform/terraform_test.go).
resource "azurerm_role_definition" "controller" {
  name        = "egressd controller (${var.cluster_name})"
  scope       = data.azurerm_resource_group.nodes.id
  description = "Secondary IP configurations and public IPs on the NICs of egressd gateway nodes."
  permissions {
    actions = [
      "Microsoft.Network/networkInterfaces/read",
      "Microsoft.Network/networkInterfaces/write",
      "Microsoft.Network/networkInterfaces/join/action",
      "Microsoft.Network/publicIPAddresses/read",
      "Microsoft.Network/publicIPAddresses/write",
      "Microsoft.Network/publicIPAddresses/delete",
      "Microsoft.Network/publicIPAddresses/join/action",
      "Microsoft.Network/virtualNetworks/subnets/read",
      "Microsoft.Network/virtualNetworks/subnets/join/action",
      "Microsoft.Network/loadBalancers/backendAddressPools/join/action",
      "Microsoft.Network/networkSecurityGroups/join/action",
      "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/networkInterfaces/read",
      "Microsoft.Compute/virtualMachineScaleSets/networkInterfaces/read",
      "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
      "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/write",
      "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/networkInterfaces/ipConfigurations/publicIPAddresses/read",
      "Microsoft.Compute/locations/operations/read",
      "Microsoft.Network/publicIPPrefixes/read",
      "Microsoft.Network/publicIPPrefixes/write",
      "Microsoft.Network/publicIPPrefixes/delete",
      "Microsoft.Network/publicIPPrefixes/join/action",
    ]
    not_actions = []
  }
  assignable_scopes = [data.azurerm_resource_group.nodes.id]
}

resource "azurerm_role_assignment" "controller" {
  scope              = data.azurerm_resource_group.nodes.id
  role_definition_id = azurerm_role_definition.controller.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.controller.principal_id
}

output "helm_values" {
  description = "Values for helm install egressd charts/egressd -n egressd-system -f -"
  value = yamlencode({
    clusterName = var.cluster_name
    provider    = "azure"
    azure = {
      subscriptionID = data.azurerm_subscription.current.subscription_id
      resourceGroup  = data.azurerm_kubernetes_cluster.this.node_resource_group
      clientID       = azurerm_user_assigned_identity.controller.client_id
      tenantID       = azurerm_user_assigned_identity.controller.tenant_id
    }
  })
}
