#!/usr/bin/env python3
"""Generate schema.rs (the protobuf schema table beside this script) for the protobuf decoder.

Inputs, both unpacked crates.io packages (to get one, depend on it from a scratch crate,
`cargo fetch`, and untar ~/.cargo/registry/cache/*/<name>-<version>.crate; nothing here
downloads anything):
  1. the upstream generated.proto files shipped in k8s-rs-pb 0.5.0 (src/v1_33/),
  2. k8s-openapi 0.29.0 (src/v1_33/), to check that every proto field name is the JSON name
     (and take the JSON spelling where they differ only in case, e.g. aPIGroup -> apiGroup),
     and to find the Go structs embedded with `json:",inline"`.

Usage: hack/gen-protobuf-schema.py <k8s-rs-pb>/src/v1_33 <k8s-openapi>/src/v1_33 schema.rs
ROOTS must list the same kinds as KINDS in ../protobuf.rs.
"""
import os
import re
import sys
from collections import deque

PROTO_ROOT = sys.argv[1]      # .../k8s-rs-pb-0.5.0/src/v1_33
OPENAPI_ROOT = sys.argv[2]    # .../k8s-openapi-0.29.0/src/v1_33
OUT = sys.argv[3]

ROOTS = [
    # core
    "api.core.v1.ConfigMap", "api.core.v1.Secret", "api.core.v1.Namespace", "api.core.v1.Service",
    "api.core.v1.ServiceAccount", "api.core.v1.Pod", "api.core.v1.ResourceQuota",
    "api.core.v1.LimitRange", "api.core.v1.PersistentVolumeClaim", "api.core.v1.Binding",
    "api.core.v1.Endpoints", "api.core.v1.PodTemplate", "api.core.v1.ReplicationController",
    "api.core.v1.Event",
    # meta
    "apimachinery.pkg.apis.meta.v1.DeleteOptions",
    # apps
    "api.apps.v1.Deployment", "api.apps.v1.ReplicaSet", "api.apps.v1.StatefulSet", "api.apps.v1.DaemonSet",
    # batch
    "api.batch.v1.Job", "api.batch.v1.CronJob",
    # rbac
    "api.rbac.v1.Role", "api.rbac.v1.RoleBinding", "api.rbac.v1.ClusterRole", "api.rbac.v1.ClusterRoleBinding",
    # policy
    "api.policy.v1.PodDisruptionBudget", "api.policy.v1.Eviction",
    # scheduling
    "api.scheduling.v1.PriorityClass",
    # networking
    "api.networking.v1.Ingress", "api.networking.v1.IngressClass", "api.networking.v1.NetworkPolicy",
    # authentication
    "api.authentication.v1.TokenRequest", "api.authentication.v1.TokenReview",
    "api.authentication.v1.SelfSubjectReview",
    # authorization
    "api.authorization.v1.SelfSubjectAccessReview", "api.authorization.v1.SelfSubjectRulesReview",
    "api.authorization.v1.SubjectAccessReview", "api.authorization.v1.LocalSubjectAccessReview",
    # certificates
    "api.certificates.v1.CertificateSigningRequest",
    # autoscaling
    "api.autoscaling.v1.HorizontalPodAutoscaler", "api.autoscaling.v1.Scale",
    "api.autoscaling.v2.HorizontalPodAutoscaler",
    # coordination
    "api.coordination.v1.Lease",
]

# Messages the decoder handles natively (their JSON form is not an object of their fields).
SPECIAL = {
    "apimachinery.pkg.apis.meta.v1.Time": "Time",
    "apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    "apimachinery.pkg.apis.meta.v1.Duration": "Duration",  # not decoded yet: a schema test fails if referenced
    "apimachinery.pkg.apis.meta.v1.FieldsV1": "FieldsV1",
    "apimachinery.pkg.api.resource.Quantity": "Quantity",
    "apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "apimachinery.pkg.runtime.RawExtension": "RawExtension",
}

SCALARS = {"string": "Str", "bytes": "Bytes", "bool": "Bool", "int32": "I32", "int64": "I64", "double": "F64"}


def short(fq):
    for prefix, rep in [
        ("api.", ""),
        ("apimachinery.pkg.apis.meta.v1.", "meta.v1."),
        ("apimachinery.pkg.api.resource.", "resource."),
        ("apimachinery.pkg.util.intstr.", "intstr."),
        ("apimachinery.pkg.runtime.", "runtime."),
    ]:
        if fq.startswith(prefix):
            return rep + fq[len(prefix):]
    raise SystemExit(f"no short name for {fq}")


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def parse_protos(root):
    messages = {}   # fq -> list of (label, type_fq_or_scalar, name, number, map_key)
    wrappers = set()
    for dirpath, _, files in os.walk(root):
        for fn in files:
            if fn != "generated.proto":
                continue
            raw = open(os.path.join(dirpath, fn)).read()
            pkg = re.search(r"^package ([\w.]+);", raw, re.M).group(1)
            # wrapper messages: `+protobuf.nullable=true` right before `message X {`
            for m in re.finditer(r"\+protobuf\.nullable=true\n(?://[^\n]*\n)*message (\w+) \{", raw):
                wrappers.add(f"{pkg}.{m.group(1)}")
            text = strip_comments(raw)
            for m in re.finditer(r"\bmessage (\w+) \{(.*?)\n\}", text, re.S):
                fq = f"{pkg}.{m.group(1)}"
                fields = []
                for line in m.group(2).split(";"):
                    line = " ".join(line.split())
                    if not line:
                        continue
                    fm = re.fullmatch(r"(optional|repeated) ([\w.]+) (\w+) = (\d+)", line)
                    mm = re.fullmatch(r"map<(\w+), ([\w.]+)> (\w+) = (\d+)", line)
                    if fm:
                        label, ty, name, num = fm.groups()
                        key = None
                    elif mm:
                        key, ty, name, num = mm.groups()
                        label = "map"
                    else:
                        raise SystemExit(f"unparsed line in {fq}: {line!r}")
                    if ty not in SCALARS:
                        ty = ty[1:] if ty.startswith(".") else f"{pkg}.{ty}"
                    fields.append((label, ty, name, int(num), key))
                messages[fq] = fields
    return messages, wrappers


def parse_openapi(root):
    keys = {}  # fq -> set of json keys
    for dirpath, _, files in os.walk(root):
        for fn in files:
            if not fn.endswith(".rs"):
                continue
            text = open(os.path.join(dirpath, fn)).read()
            rel = os.path.relpath(dirpath, root).replace(os.sep, ".")
            for m in re.finditer(r"impl<'de> crate::serde::Deserialize<'de> for (\w+) \{", text):
                ty = m.group(1)
                if ty == "Field":
                    continue
                start = m.end()
                nxt = re.search(r"\nimpl", text[start:])
                body = text[start:start + nxt.start()] if nxt else text[start:]
                ks = set(re.findall(r'"([^"]+)" => Field::Key_', body))
                keys[f"{rel}.{ty}"] = ks
    return keys


def main():
    messages, wrappers = parse_protos(PROTO_ROOT)
    openapi = parse_openapi(OPENAPI_ROOT)

    closure = []
    seen = set()
    queue = deque(ROOTS)
    while queue:
        fq = queue.popleft()
        if fq in seen or fq in SPECIAL or fq in wrappers:
            continue
        if fq not in messages:
            raise SystemExit(f"unknown message {fq}")
        seen.add(fq)
        closure.append(fq)
        for label, ty, name, num, key in messages[fq]:
            if key is not None and key != "string":
                raise SystemExit(f"non-string map key in {fq}.{name}")
            if ty not in SCALARS:
                queue.append(ty)

    problems = []
    inline = set()
    json_name = {}  # (fq, proto name) -> JSON name where they differ (e.g. aPIGroup -> apiGroup)
    for fq in closure:
        oa = openapi.get(fq)
        if oa is None:
            problems.append(f"{fq}: not in k8s-openapi")
            continue
        for label, ty, name, num, key in messages[fq]:
            if name in oa:
                continue
            folded = [k for k in oa if k.lower() == name.lower()]
            if len(folded) == 1:
                json_name[(fq, name)] = folded[0]
                print("RENAME:", short(fq), name, "->", folded[0], file=sys.stderr)
                continue
            if label == "optional" and ty in messages and ty not in SPECIAL:
                sub = {f[2] for f in messages[ty]}
                if sub <= oa:
                    inline.add((fq, name))
                    continue
            problems.append(f"{fq}.{name}: no such JSON key in k8s-openapi")
        # every JSON key of the openapi type must come from a proto field (or inline)
        names = set()
        for label, ty, name, num, key in messages[fq]:
            if (fq, name) in inline:
                names |= {f[2] for f in messages[ty]}
            else:
                names.add(json_name.get((fq, name), name))
        extra = oa - names - {"apiVersion", "kind"}
        if extra:
            problems.append(f"{fq}: JSON keys without proto field: {sorted(extra)}")

    for p in problems:
        print("CHECK:", p, file=sys.stderr)
    for fq, name in sorted(inline):
        print("INLINE:", short(fq), name, file=sys.stderr)

    def ty_expr(ty):
        if ty in SCALARS:
            return SCALARS[ty]
        if ty in wrappers:
            return "StrList"
        return f'Msg("{short(ty)}")'

    rows = []
    for fq in sorted(closure, key=short):
        fields = []
        for label, ty, name, num, key in sorted(messages[fq], key=lambda f: f[3]):
            if (fq, name) in inline:
                fields.append(f'inline({num}, "{short(ty)}")')
                continue
            fn = {"optional": "one", "repeated": "rep", "map": "map"}[label]
            fields.append(f'{fn}({num}, "{json_name.get((fq, name), name)}", {ty_expr(ty)})')
        body = "".join(f"        {f},\n" for f in fields)
        rows.append(f'    ("{short(fq)}", &[\n{body}    ]),')

    with open(OUT, "w") as out:
        out.write(HEADER)
        out.write("\n".join(rows))
        out.write("\n];\n")
    print(f"{len(closure)} messages, {sum(len(messages[m]) for m in closure)} fields", file=sys.stderr)


HEADER = """\
//! The protobuf schema of the built-in kinds that kubectl's typed clients send: for each
//! message, its fields by number, with their JSON name, type and cardinality.
//!
//! @generated from the `generated.proto` files shipped in the crates.io package
//! `k8s-rs-pb` 0.5.0 (`src/v1_33/`, Kubernetes 1.33), cross-checked against the JSON names of
//! `k8s-openapi` 0.29 (`v1_33`), which also tells where Go embeds a struct with
//! `json:",inline"` (`inline`). The messages are the transitive closure of [`super::KINDS`].
//! Regenerate with `hack/gen-protobuf-schema.py` rather than edit by hand.

use super::{inline, map, one, rep, Field, Type::*};

/// Sorted by message name (checked by a test), for binary search.
#[rustfmt::skip]
pub(super) static MESSAGES: &[(&str, &[Field])] = &[
"""

if __name__ == "__main__":
    main()
