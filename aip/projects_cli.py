"""``aip projects``: projects (platform admins make, rename and delete them) and their members (a project's
maintainers manage them). Every other command acts in ``--project`` (or ``AIP_PROJECT``;
``default`` when neither names one)."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from aip.api_client import PlatformAPI
from aiplatform.access.roles import ROLES
from aiplatform.settings import Settings


def _path(project: str, *rest: str) -> str:
    return "/".join([f"/v1/projects/{quote(project, safe='')}", *(quote(part, safe="") for part in rest)])


def _members(project: dict[str, Any]) -> str:
    return ", ".join(f"{m['user']} ({m['role']})" for m in project["members"]) or "no members"


def cmd_projects_create(args: argparse.Namespace, settings: Settings) -> None:
    project = PlatformAPI(settings).post("/v1/projects", json={"name": args.name})
    print(json.dumps(project) if args.json else f"project {project['name']} created")


def cmd_projects_rename(args: argparse.Namespace, settings: Settings) -> None:
    project = PlatformAPI(settings).request("PATCH", _path(args.name), json={"name": args.new_name})
    print(json.dumps(project) if args.json else f"project {args.name} renamed to {project['name']}")


def cmd_projects_delete(args: argparse.Namespace, settings: Settings) -> None:
    gone = PlatformAPI(settings).request("DELETE", _path(args.name))
    if args.json:
        print(json.dumps(gone))
        return
    print(f"project {gone['project']} deleted ({gone['members']} members removed, {gone['keys_revoked']} keys revoked)")


def cmd_projects_list(args: argparse.Namespace, settings: Settings) -> None:
    projects = PlatformAPI(settings).get("/v1/projects")["projects"]
    if args.json:
        print(json.dumps(projects))
        return
    if not projects:
        print("no projects")
    for project in projects:
        print(f"{project['name']:<24} {len(project['members'])} members")


def cmd_projects_show(args: argparse.Namespace, settings: Settings) -> None:
    project = PlatformAPI(settings).get(_path(args.name))
    print(json.dumps(project) if args.json else f"{project['name']}: {_members(project)}")


def cmd_projects_members(args: argparse.Namespace, settings: Settings) -> None:
    members = PlatformAPI(settings).get(_path(args.name, "members"))["members"]
    if args.json:
        print(json.dumps(members))
        return
    if not members:
        print(f"{args.name} has no members")
    for member in members:
        print(f"{member['user']:<24} {member['role']:<12} granted by {member['granted_by']}")


def cmd_projects_add_member(args: argparse.Namespace, settings: Settings) -> None:
    project = PlatformAPI(settings).request("PUT", _path(args.name, "members", args.user), json={"role": args.role})
    print(json.dumps(project) if args.json else f"{args.user} is a {args.role} of {args.name}")


def cmd_projects_remove_member(args: argparse.Namespace, settings: Settings) -> None:
    project = PlatformAPI(settings).request("DELETE", _path(args.name, "members", args.user))
    print(json.dumps(project) if args.json else f"{args.user} removed from {args.name}")


def add_projects_commands(commands: Any) -> None:
    projects = commands.add_parser("projects", help="projects and their members").add_subparsers(
        dest="projects", required=True
    )
    create = projects.add_parser("create", help="a new, empty project (platform admins)")
    create.add_argument("name")
    create.set_defaults(run=cmd_projects_create)
    rename = projects.add_parser("rename", help="rename a project that holds nothing (platform admins)")
    rename.add_argument("name")
    rename.add_argument("new_name")
    rename.set_defaults(run=cmd_projects_rename)
    delete = projects.add_parser("delete", help="delete a project that holds nothing (platform admins)")
    delete.add_argument("name")
    delete.set_defaults(run=cmd_projects_delete)
    listing = projects.add_parser("list", help="the projects you have a role in (all, for platform admins)")
    listing.set_defaults(run=cmd_projects_list)
    show = projects.add_parser("show", help="a project and its members")
    show.add_argument("name")
    show.set_defaults(run=cmd_projects_show)
    members = projects.add_parser("members", help="a project's members and their roles")
    members.add_argument("name")
    members.set_defaults(run=cmd_projects_members)
    add = projects.add_parser("add-member", help="give a user a role in the project (or change it)")
    add.add_argument("name")
    add.add_argument("user")
    add.add_argument("--role", choices=ROLES, default="viewer")
    add.set_defaults(run=cmd_projects_add_member)
    remove = projects.add_parser("remove-member", help="the user loses access to the project at once")
    remove.add_argument("name")
    remove.add_argument("user")
    remove.set_defaults(run=cmd_projects_remove_member)
    for command in (create, rename, delete, listing, show, members, add, remove):
        command.add_argument("--json", action="store_true")
