# Swell's kind node base image: kind's images/base recipe on Debian's own packages, for machines that
# cannot pull kindest/base. scripts/kind/build.sh builds it in a temporary context that holds this file
# and kind's images/base/files (copied from the Go module cache, never committed), modes already fixed.
# Differences from kind's image: Debian bookworm's containerd 1.6 / runc / CNI plugins instead of kind's
# own builds, no fuse-overlayfs (rootless only) and no NFS/iSCSI tools, and crictl from the Go proxy.
ARG BASE_IMAGE=swell/debian:bookworm
FROM $BASE_IMAGE

# Packages first, so that dpkg never meets kind's /etc/containerd/config.toml as a foreign conffile.
# The list follows kind's: systemd; what kubelet and kube-proxy call on the node; the container runtime.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      systemd \
      conntrack iptables nftables iproute2 ethtool util-linux mount kmod \
      libseccomp2 pigz e2fsprogs \
      bash ca-certificates curl jq procps \
      containerd runc containernetworking-plugins \
      >/dev/null \
 && apt-get clean -y \
 && rm -rf /var/lib/apt/lists/* /var/cache/debconf/* /var/log/* /tmp/* /var/tmp/* \
      /usr/share/doc/* /usr/share/man/* /usr/share/locale/*

COPY files/usr/local/bin/ /usr/local/bin/
COPY files/kind/ /kind/
COPY files/LICENSES/ /LICENSES/
COPY files/etc/ /etc/
COPY crictl /usr/local/bin/crictl

# Then kind's systemd layout, and Debian's binaries where kind's unit files and config expect them:
# containerd.service runs /usr/local/bin/containerd, the CRI plugin looks for plugins in /opt/cni/bin.
# restrict_oom_score_adj: containerd may not lower a container's oom_score_adj below its own on hosts
# that do not allow it (the entrypoint sets it only for user namespaces); harmless elsewhere.
RUN find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete \
 && rm -f /lib/systemd/system/multi-user.target.wants/* \
 && rm -f /etc/systemd/system/*.wants/* \
 && rm -f /lib/systemd/system/local-fs.target.wants/* \
 && rm -f /lib/systemd/system/sockets.target.wants/*udev* \
 && rm -f /lib/systemd/system/sockets.target.wants/*initctl* \
 && rm -f /lib/systemd/system/basic.target.wants/* \
 && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \
 && ln -sf /usr/lib/systemd/systemd /sbin/init \
 && ln -sf /usr/bin/containerd /usr/local/bin/containerd \
 && mkdir -p /opt/cni/bin && ln -sf /usr/lib/cni/* /opt/cni/bin/ \
 && sed -i -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' \
      -e 's#sandbox_image = .*#sandbox_image = "registry.k8s.io/pause:3.10.2"#' /etc/containerd/config.toml \
 && ctr oci spec \
      | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
      | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json \
 && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \
 && systemctl mask systemd-binfmt.service \
 && mkdir -p /etc/kubernetes/manifests \
 && containerd --version && runc --version >/dev/null && crictl --version

ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]
