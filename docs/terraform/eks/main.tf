# egressd on EKS: one gateway node group per zone, labelled and tainted for egressd, and the
# IRSA role of the egressd controller with the least-privilege policy of docs/iam/aws-policy.json.
# Apply next to an existing cluster; then install the chart with the output helm_values.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40"
    }
  }
}

variable "cluster_name" {
  description = "EKS cluster name; also the chart's clusterName and the egressd.io/cluster tag."
  type        = string
}

variable "region" {
  type = string
}

variable "gateway_subnets" {
  description = "One subnet per zone for the gateway nodes, such as { eu-west-1a = \"subnet-...\" }."
  type        = map(string)
}

variable "node_role_arn" {
  description = "IAM role of the gateway nodes (the usual EKS worker role; it needs no EC2 write rights for egressd)."
  type        = string
}

variable "instance_types" {
  type    = list(string)
  default = ["m6i.large"]
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

data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

data "aws_iam_openid_connect_provider" "this" {
  url = data.aws_eks_cluster.this.identity[0].oidc[0].issuer
}

# The gateway nodes' interfaces carry egressd.io/gateway-node, so that the controller's policy
# can assign addresses on them and on no other instance's interfaces.
resource "aws_launch_template" "gateway" {
  name_prefix = "${var.cluster_name}-egressd-gateway-"
  tag_specifications {
    resource_type = "network-interface"
    tags = {
      "egressd.io/gateway-node" = var.cluster_name
    }
  }
}

resource "aws_eks_node_group" "gateway" {
  for_each        = var.gateway_subnets
  cluster_name    = var.cluster_name
  node_group_name = "egressd-gateway-${each.key}"
  node_role_arn   = var.node_role_arn
  subnet_ids      = [each.value]
  instance_types  = var.instance_types

  scaling_config {
    desired_size = 1
    min_size     = 1
    max_size     = 2
  }

  launch_template {
    id      = aws_launch_template.gateway.id
    version = aws_launch_template.gateway.latest_version
  }

  labels = {
    "egressd.io/gateway" = var.gateway_group
  }

  taint {
    key    = "egressd.io/gateway"
    value  = "true"
    effect = "NO_SCHEDULE"
  }

  update_config {
    max_unavailable = 1
  }
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [data.aws_iam_openid_connect_provider.this.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${replace(data.aws_iam_openid_connect_provider.this.url, "https://", "")}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${replace(data.aws_iam_openid_connect_provider.this.url, "https://", "")}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "controller" {
  name               = "${var.cluster_name}-egressd-controller"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

# The same statements as docs/iam/aws-policy.json (checked by docs/terraform/terraform_test.go).
data "aws_iam_policy_document" "controller" {
  statement {
    sid       = "Describe"
    actions   = ["ec2:DescribeInstances", "ec2:DescribeInstanceTypes", "ec2:DescribeSubnets", "ec2:DescribeNetworkInterfaces", "ec2:DescribeAddresses"]
    resources = ["*"]
  }
  statement {
    sid       = "CreateOwnedInterfaces"
    actions   = ["ec2:CreateNetworkInterface"]
    resources = ["arn:aws:ec2:*:*:network-interface/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/egressd.io/cluster"
      values   = [var.cluster_name]
    }
    condition {
      test     = "Null"
      variable = "aws:RequestTag/egressd.io/owner"
      values   = ["false"]
    }
  }
  statement {
    sid       = "CreateInterfacesInSubnets"
    actions   = ["ec2:CreateNetworkInterface"]
    resources = ["arn:aws:ec2:*:*:subnet/*", "arn:aws:ec2:*:*:security-group/*"]
  }
  statement {
    sid       = "AllocateOwnedAddresses"
    actions   = ["ec2:AllocateAddress"]
    resources = ["arn:aws:ec2:*:*:elastic-ip/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/egressd.io/cluster"
      values   = [var.cluster_name]
    }
    condition {
      test     = "Null"
      variable = "aws:RequestTag/egressd.io/owner"
      values   = ["false"]
    }
  }
  statement {
    sid       = "TagOnCreateOnly"
    actions   = ["ec2:CreateTags"]
    resources = ["arn:aws:ec2:*:*:network-interface/*", "arn:aws:ec2:*:*:elastic-ip/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["CreateNetworkInterface", "AllocateAddress"]
    }
  }
  statement {
    sid       = "RecordAddressOwnership"
    actions   = ["ec2:CreateTags", "ec2:DeleteTags"]
    resources = ["arn:aws:ec2:*:*:network-interface/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/egressd.io/gateway-node"
      values   = [var.cluster_name]
    }
    condition {
      test     = "ForAllValues:StringLike"
      variable = "aws:TagKeys"
      values   = ["egressd.io/ip/*"]
    }
  }
  statement {
    sid       = "ManageOwnedInterfaces"
    actions   = ["ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses", "ec2:AssignIpv6Addresses", "ec2:UnassignIpv6Addresses", "ec2:AttachNetworkInterface", "ec2:DetachNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:ModifyNetworkInterfaceAttribute", "ec2:AssociateAddress", "ec2:DisassociateAddress"]
    resources = ["arn:aws:ec2:*:*:network-interface/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/egressd.io/cluster"
      values   = [var.cluster_name]
    }
  }
  statement {
    sid       = "UseGatewayNodeInterfaces"
    actions   = ["ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses", "ec2:AssignIpv6Addresses", "ec2:UnassignIpv6Addresses", "ec2:AssociateAddress", "ec2:DisassociateAddress"]
    resources = ["arn:aws:ec2:*:*:network-interface/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/egressd.io/gateway-node"
      values   = [var.cluster_name]
    }
  }
  statement {
    sid       = "AttachToInstances"
    actions   = ["ec2:AttachNetworkInterface", "ec2:DetachNetworkInterface", "ec2:AssociateAddress"]
    resources = ["arn:aws:ec2:*:*:instance/*"]
  }
  statement {
    sid       = "ManageOwnedAddresses"
    actions   = ["ec2:AssociateAddress", "ec2:DisassociateAddress", "ec2:ReleaseAddress"]
    resources = ["arn:aws:ec2:*:*:elastic-ip/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/egressd.io/cluster"
      values   = [var.cluster_name]
    }
  }
}

resource "aws_iam_policy" "controller" {
  name   = "${var.cluster_name}-egressd-controller"
  policy = data.aws_iam_policy_document.controller.json
}

resource "aws_iam_role_policy_attachment" "controller" {
  role       = aws_iam_role.controller.name
  policy_arn = aws_iam_policy.controller.arn
}

output "helm_values" {
  description = "Values for helm install egressd charts/egressd -n egressd-system -f -"
  value = yamlencode({
    clusterName = var.cluster_name
    provider    = "aws"
    aws = {
      region  = var.region
      vpcID   = data.aws_eks_cluster.this.vpc_config[0].vpc_id
      roleARN = aws_iam_role.controller.arn
    }
  })
}
