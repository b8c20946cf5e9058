// LeaderWorkerSet (leaderworkerset.x-k8s.io/v1, https://lws.sigs.k8s.io) has no published
// schema package: these are the fields of its API reference that deploy/ may use, so that a
// misspelt or misplaced field fails the check. Its pod templates are core PodTemplateSpecs,
// checked in full (and validated by check-k8s.mjs against the Kubernetes schema).
import type { IObjectMeta } from "@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta";
import type { IPodTemplateSpec } from "kubernetes-models/v1/PodTemplateSpec";

export interface ILeaderWorkerSet {
  apiVersion: "leaderworkerset.x-k8s.io/v1";
  kind: "LeaderWorkerSet";
  metadata: IObjectMeta & { name: string };
  spec: {
    replicas?: number;
    startupPolicy?: "LeaderCreated" | "LeaderReady";
    leaderWorkerTemplate: {
      size?: number;
      restartPolicy?: "RecreateGroupOnPodRestart" | "Default" | "None";
      leaderTemplate?: IPodTemplateSpec;
      workerTemplate: IPodTemplateSpec;
    };
    rolloutStrategy?: {
      type?: "RollingUpdate";
      rollingUpdateConfiguration?: {
        maxUnavailable?: number | string;
        maxSurge?: number | string;
      };
    };
  };
}
