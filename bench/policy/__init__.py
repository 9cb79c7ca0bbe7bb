"""Policy benchmark: replica-seconds against queue wait, Swell's own decision against KEDA+HPA and Knative KPA."""
